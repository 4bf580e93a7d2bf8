"""Stall watchdog: a rank that stops making progress is found, shown and ended in minutes.

Without it a rank stuck for good (a deadlock, a hung read, a callback that never returns) leaves
its peers waiting in the next collective until ``timeouts.collective_s`` (30 minutes), and the run
then fails without saying which rank or where. Here:

* every rank keeps a small record of where it is (:class:`RankState`: the last step it finished,
  the phase it is in, when it last made progress, its median step time), updated by Lightning
  hooks with no host sync, and a daemon thread sends it to the :class:`StallBoard` actor every
  few seconds (the thread runs while the main one is stuck);
* the driver's :class:`StallMonitor` reads the board; when no rank has made progress for
  ``timeouts.stall_s`` (default: 20 median steps, at least two minutes), it names the rank(s)
  furthest behind (the others wait for them in a collective), has every rank write its Python
  stacks (py-spy where it can attach, else faulthandler) into ``exp_dir/logs/stall-<n>/``, prints
  one line, and ends the stalled rank(s): Ray Train fails the attempt and restarts it from the last
  checkpoint as ``max_failures`` allows;
* the same records show every rank's pace: the median step time and the rank's own work per step
  (its forward pass, which no collective evens out), written to the
  run's status file and to TensorBoard (``tensorboard/ranks``), and a rank whose own work is 1.5x
  the other ranks' median is named in a straggler line.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import statistics
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L

# The default threshold: this many median steps without progress on any rank, and never less
# than STALL_FLOOR_S (a validation, a checkpoint or a data-loader restart is progress too).
STALL_STEPS = 20
STALL_FLOOR_S = 120.0
# Steps an attempt must finish before its pace is known (the first ones compile, warm caches).
WARMUP_STEPS = 3
BEAT_S = 2.0
# A straggler: a rank whose own work per step (its forward pass) is this many times the other
# ranks' median, and at least STRAGGLER_MIN_S longer (a few ms of noise on tiny steps is no straggler);
# said again for the same rank after STRAGGLER_REPEAT_S at the earliest.
STRAGGLER_RATIO = 1.5
STRAGGLER_MIN_S = 0.05
STRAGGLER_REPEAT_S = 300.0
# A rank whose process sent nothing for this long has ended (a finished or failed attempt's).
GONE_S = 30.0
# How long the driver waits for the ranks' stack files before it ends the stalled ranks anyway.
DUMP_WAIT_S = 20.0
# Where a rank can be after finishing training step k, in order: one still in step k's callbacks
# ("after step") is behind one past them ("between steps": Lightning's next collective, a
# validation, a checkpoint) or already in step k+1 (whose gradient all-reduce runs in backward).
PHASES = ("after step", "between steps", "validation", "checkpoint", "data", "forward", "backward", "optimizer")


@dataclass
class RankState:
    """Where one rank is: sent to the board, compared by the driver."""

    rank: int
    pid: int
    host: str
    started: float  # this attempt's worker start (wall clock): a restarted group's states are new
    step: int = 0  # the last training step this rank finished (global step)
    phase: str = "data"  # one of PHASES
    progress: float = 0.0  # wall clock of its last progress (a step, a validation batch, a checkpoint)
    steps_done: int = 0  # steps finished in this attempt
    median_step_s: float | None = None
    # The median of this rank's own work per step: its forward pass (the training step up to its
    # first backward), where no collective runs; every other part of a DDP step waits for the
    # slowest rank (Lightning's and DDP's broadcasts before it, the gradient all-reduce after).
    busy_s: float | None = None
    # The median of this rank's wait for its next batch: from the end of one step to the start of
    # the next (the DataLoader's next(), the move to the device), as rank 0's `data_wait` counts it.
    data_wait_s: float | None = None
    # A GPU rank's peak memory allocated by PyTorch (GiB) and the device's utilisation (%, NVML),
    # read by the reporter's thread at each beat: no host sync in the training step.
    gpu_mem_gib: float | None = None
    gpu_util_pct: float | None = None
    beat: float = 0.0  # wall clock of the send: a process that stopped sending is gone, not stalled

    def position(self) -> tuple[int, int]:
        return self.step, PHASES.index(self.phase)


def find_stragglers(states: Mapping[int, RankState]) -> dict[int, float]:
    """Ranks whose own work per step is at least STRAGGLER_RATIO times the median of the other
    ranks' (and STRAGGLER_MIN_S more): ``rank -> that median``. The others', not all ranks': with
    two ranks a median that includes the straggler halves its lead."""
    busy = {r: s.busy_s for r, s in states.items() if s.busy_s is not None and s.steps_done >= WARMUP_STEPS}
    slow = {}
    for rank, own in sorted(busy.items()):
        others = [b for r, b in busy.items() if r != rank]
        if not others:
            continue
        median = statistics.median(others)
        if own >= STRAGGLER_RATIO * median and own - median >= STRAGGLER_MIN_S:
            slow[rank] = median
    return slow


def stall_threshold(states: Mapping[int, RankState], stall_s: float | None) -> float | None:
    """Seconds without progress on every rank that count as a stall; ``None`` while the pace is
    unknown (no rank has finished its warm-up steps) and ``stall_s`` is not set."""
    if stall_s is not None:
        return float(stall_s)
    medians = [s.median_step_s for s in states.values() if s.median_step_s is not None]
    if not medians:
        return None
    return max(STALL_FLOOR_S, STALL_STEPS * max(medians))


def find_stall(states: Mapping[int, RankState], stall_s: float | None, now: float) -> tuple[list[int], float] | None:
    """The stalled ranks (furthest behind) and how long no rank has progressed, or ``None``."""
    live = [s for s in states.values() if s.steps_done >= WARMUP_STEPS or stall_s is not None]
    if not live or len(live) < len(states):
        return None
    threshold = stall_threshold(states, stall_s)
    idle = now - max(s.progress for s in live)
    if threshold is None or idle < threshold:
        return None
    behind = min(s.position() for s in live)
    return sorted(s.rank for s in live if s.position() == behind), idle


class StallBoard:
    """The ranks' states and the driver's orders (a Ray actor on the driver's node, 0 CPUs)."""

    def __init__(self) -> None:
        self.states: dict[int, dict] = {}
        self.dump_dir: str | None = None
        self.dumped: dict[int, str] = {}
        self.abort: set[tuple[int, float]] = set()

    def beat(self, state: dict) -> tuple[str | None, bool]:
        """Record a rank's state; returns the dump directory to write stacks into (once) and
        whether this rank is to end itself."""
        self.states[state["rank"]] = state
        dump = self.dump_dir if state["rank"] not in self.dumped and self.dump_dir else None
        return dump, (state["rank"], state["started"]) in self.abort

    def wrote(self, rank: int, path: str) -> None:
        self.dumped[rank] = path

    def read(self) -> tuple[dict[int, dict], dict[int, str]]:
        return dict(self.states), dict(self.dumped)

    def order_dump(self, directory: str) -> None:
        self.dump_dir, self.dumped = directory, {}

    def order_abort(self, ranks: list[int]) -> None:
        self.abort |= {(r, self.states[r]["started"]) for r in ranks if r in self.states}
        self.dump_dir = None


# Ray Train 2.60's NCCL hang detector (NCCL RAS), read from the driver's environment.
NCCL_HANG_DETECTOR_ENV = {"RAY_TRAIN_ENABLE_NCCL_HANG_DETECTOR": "1", "RAY_TRAIN_NCCL_RAS_ACTION": "observe"}


def enable_nccl_hang_detector(use_gpu: bool, environ=os.environ) -> dict[str, str]:
    """On GPU runs, turn on Ray's NCCL hang detector in observe mode (it logs a hang and captures
    stacks under the run's ``hang_detector/``; ending the attempt stays this watchdog's job), unless
    the user's environment says otherwise. Returns what was set."""
    if not use_gpu:
        return {}
    added = {k: v for k, v in NCCL_HANG_DETECTOR_ENV.items() if k not in environ}
    environ.update(added)
    return added


def start_board():
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=node)(StallBoard).remote()


def write_stacks(path: Path) -> str:
    """This process's Python stacks, every thread, into ``path``: py-spy (with native frames' Python
    view) where it can attach to its own process, else faulthandler. Returns the tool used."""
    import shutil
    import sys

    path.parent.mkdir(parents=True, exist_ok=True)
    beside = Path(sys.executable).parent / "py-spy"  # ray[default] installs it into the environment
    py_spy = str(beside) if beside.is_file() else shutil.which("py-spy") or "py-spy"
    try:
        dump = subprocess.run([py_spy, "dump", "--pid", str(os.getpid())], capture_output=True, text=True,
                              timeout=30)
        if dump.returncode == 0 and dump.stdout.strip():
            path.write_text(dump.stdout)
            return "py-spy"
    except (OSError, subprocess.TimeoutExpired):
        pass
    with open(path, "w") as f:
        faulthandler.dump_traceback(f, all_threads=True)
    return "faulthandler"


class StallReporter(L.Callback):
    """A rank's side: keeps its :class:`RankState` current from Lightning's hooks and sends it to
    the board from a daemon thread, which also writes the stacks and ends the process when told."""

    def __init__(self, board, rank: int, beat_s: float = BEAT_S) -> None:
        import socket

        now = time.time()
        self.board, self.beat_s = board, beat_s
        self.state = RankState(rank=rank, pid=os.getpid(), host=socket.gethostname(), started=now, progress=now)
        self._last_step_end: float | None = None
        self._durations: deque[float] = deque(maxlen=50)
        self._forward_start: float | None = None
        self._busy: deque[float] = deque(maxlen=50)
        self._waits: deque[float] = deque(maxlen=50)
        self._device = None  # the rank's CUDA device, on a GPU rank
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="espnet3-stall-reporter", daemon=True)

    def _progress(self, phase: str) -> None:
        self.state.phase = phase
        self.state.progress = time.time()

    def setup(self, trainer, pl_module, stage: str) -> None:
        if pl_module.device.type == "cuda":
            self._device = pl_module.device
        # Lightning calls the module's on_train_batch_end after every callback's: past it, this
        # rank has left step k's callbacks (one of which may be the one that never returns).
        after_callbacks = pl_module.on_train_batch_end

        def on_train_batch_end(*args, **kwargs):
            result = after_callbacks(*args, **kwargs)
            self.state.phase = "between steps"
            return result

        pl_module.on_train_batch_end = on_train_batch_end
        # DDP calls the module's training_step after its own broadcasts: from here to the first
        # backward the rank works alone.
        training_step = pl_module.training_step

        def timed_training_step(*args, **kwargs):
            self._forward_start = time.time()
            return training_step(*args, **kwargs)

        pl_module.training_step = timed_training_step

    def on_train_start(self, trainer, pl_module) -> None:
        self.state.step = trainer.global_step
        self._thread.start()

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop.set()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._stop.set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._last_step_end is not None and self.state.phase == "between steps":  # not after a validation
            self._waits.append(time.time() - self._last_step_end)
        self.state.phase = "forward"

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self._forward_start is not None:  # the step's first backward (a GAN step has one per turn)
            self._busy.append(time.time() - self._forward_start)
            self._forward_start = None
        self.state.phase = "backward"

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.state.phase = "optimizer"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.time()
        if self._last_step_end is not None:  # step to step: data loading included
            self._durations.append(now - self._last_step_end)
        self._last_step_end = now
        self.state.step = trainer.global_step
        self.state.steps_done += 1
        if self.state.steps_done >= WARMUP_STEPS:
            self.state.median_step_s = statistics.median(self._durations)
            self.state.busy_s = statistics.median(self._busy) if self._busy else None
            self.state.data_wait_s = statistics.median(self._waits) if self._waits else None
        self._progress("after step")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._progress("validation")

    def on_validation_end(self, trainer, pl_module) -> None:
        self._progress("data")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._progress("checkpoint")

    def sample_gpu(self) -> None:
        """The GPU fields of the rank's state: PyTorch's allocator counters (host-side) and NVML's
        utilisation (``nvidia-ml-py``); where NVML cannot answer (a MIG slice, no driver access),
        the memory alone."""
        if self._device is None:
            return
        import torch

        self.state.gpu_mem_gib = round(torch.cuda.max_memory_allocated(self._device) / 2**30, 2)
        try:
            self.state.gpu_util_pct = float(torch.cuda.utilization(self._device))
        except Exception:  # noqa: BLE001 - NVML's errors are its own types, or ModuleNotFoundError
            self.state.gpu_util_pct = None

    def _run(self) -> None:
        import ray
        from ray.exceptions import RayError

        while not self._stop.wait(self.beat_s):
            self.sample_gpu()
            self.state.beat = time.time()
            try:
                dump_dir, abort = ray.get(self.board.beat.remote(asdict(self.state)), timeout=30)
            except (RayError, TimeoutError):
                continue  # the driver's board is gone or busy: training goes on without it
            if dump_dir:
                from espnet3 import storage

                path = Path(dump_dir) / f"rank{self.state.rank}.txt"
                tool = write_stacks(path)
                storage.push(path)  # a run in a bucket: beside its logs there
                self.board.wrote.remote(self.state.rank, f"{path} ({tool})")
            if abort:
                os.kill(os.getpid(), signal.SIGKILL)


# How often the driver writes the ranks' pace into the run's status file.
STATUS_EVERY_S = 15.0


def _pace(state: RankState) -> dict:
    return {"host": state.host, "pid": state.pid, "step": state.step, "phase": state.phase,
            "idle_s": round(time.time() - state.progress, 1), "median_step_s": state.median_step_s,
            "busy_s": state.busy_s, "data_wait_s": state.data_wait_s, "gpu_mem_gib": state.gpu_mem_gib, "gpu_util_pct": state.gpu_util_pct}


class StallMonitor:
    """The driver's side: reads the board while ``fit()`` runs and acts on a stall (module doc)."""

    def __init__(self, board, exp_dir: Path, stall_s: float | None, status=None, poll_s: float = 5.0) -> None:
        self.board, self.exp_dir, self.stall_s, self.poll_s = board, Path(exp_dir), stall_s, poll_s
        self.status = status  # a RunStatus: the ranks' place and pace for `python -m espnet3.status`
        self._status_written = 0.0
        self._stragglers_said: dict[int, float] = {}
        self._tensorboard = None
        self.stalls = 0
        self.since = 0.0  # after a stall, only the restarted attempt's workers count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="espnet3-stall-monitor", daemon=True)

    def __enter__(self) -> StallMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._tensorboard is not None:
            from espnet3 import storage

            self._tensorboard.close()
            storage.push_tree(self._tensorboard.log_dir)  # a run in a bucket: beside rank 0's logs

    def _run(self) -> None:
        import ray
        from ray.exceptions import RayError

        while not self._stop.wait(self.poll_s):
            try:
                raw, _ = ray.get(self.board.read.remote(), timeout=30)
            except (RayError, TimeoutError):
                continue
            now = time.time()
            states = {int(r): RankState(**s) for r, s in raw.items()
                      if s["started"] >= self.since and now - s["beat"] < GONE_S}
            if states and now - self._status_written >= STATUS_EVERY_S:
                self._record_pace(states)
                self._status_written = now
            self._say_stragglers(states, now)
            found = find_stall(states, self.stall_s, now)
            if found is not None:
                self._act(states, *found)

    def _say_stragglers(self, states: dict[int, RankState], now: float) -> None:
        for rank, median in find_stragglers(states).items():
            if now - self._stragglers_said.get(rank, -STRAGGLER_REPEAT_S) < STRAGGLER_REPEAT_S:
                continue
            self._stragglers_said[rank] = now
            state = states[rank]
            print(f"[espnet3] straggler: rank {rank} on {state.host} (pid {state.pid}) works {state.busy_s:.3f} s per "
                  f"step in its forward pass, {state.busy_s / median:.1f}x the other ranks' median "
                  f"{median:.3f} s; every step waits for it", flush=True)

    def _record_pace(self, states: dict[int, RankState]) -> None:
        """The ranks' pace into the run's status file and TensorBoard (``tensorboard/ranks``:
        ``pace/rank<r>/{step_s,busy_s,data_wait_s}`` and, on GPU ranks, ``gpu/rank<r>/{mem_gib,util_pct}`` at
        each rank's step)."""
        if self.status is not None:
            self.status.ranks({r: _pace(st) for r, st in states.items()})
        from espnet3.orchestration.extensions import TENSORBOARD_DIR

        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.exp_dir / TENSORBOARD_DIR / "ranks"))
        for rank, state in states.items():
            for tag, value in ((f"pace/rank{rank}/step_s", state.median_step_s),
                               (f"pace/rank{rank}/busy_s", state.busy_s),
                               (f"pace/rank{rank}/data_wait_s", state.data_wait_s),
                               (f"gpu/rank{rank}/mem_gib", state.gpu_mem_gib),
                               (f"gpu/rank{rank}/util_pct", state.gpu_util_pct)):
                if value is not None:
                    self._tensorboard.add_scalar(tag, value, state.step)
        self._tensorboard.flush()

    def _act(self, states: dict[int, RankState], ranks: list[int], idle: float) -> None:
        import ray

        from espnet3.orchestration.console import LOG_DIR

        self.stalls += 1
        directory = self.exp_dir / LOG_DIR / f"stall-{self.stalls}"
        ray.get(self.board.order_dump.remote(str(directory)), timeout=30)
        deadline = time.time() + DUMP_WAIT_S
        dumped: dict[int, str] = {}
        while time.time() < deadline and len(dumped) < len(states) and not self._stop.is_set():
            time.sleep(1.0)
            dumped = ray.get(self.board.read.remote(), timeout=30)[1]
        where = "; ".join(f"rank {r} on {states[r].host} (pid {states[r].pid}): {states[r].phase}, last step "
                          f"{states[r].step}" for r in ranks)
        print(f"[espnet3] stall: no rank made progress for {idle:.0f} s; behind: {where}; the others wait for "
              f"{'it' if len(ranks) == 1 else 'them'}. Stacks of {len(dumped)}/{len(states)} ranks -> {directory}; "
              "ending the stalled rank(s): Ray Train restarts from the last checkpoint while max_failures allows",
              flush=True)
        ray.get(self.board.order_abort.remote(ranks), timeout=30)
        self.since = time.time()
