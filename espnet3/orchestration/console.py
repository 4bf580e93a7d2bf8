"""The driver's console during training: one progress display, Ray's noise in log files.

Ray Train workers write everything they print to ``exp_dir/logs/rank<N>.log``
(:mod:`espnet3.orchestration.worker_logs`). What the driver shows comes through a Ray queue
instead: rank 0's progress and validation lines, and warnings raised by espnet3's or the recipe's
own code on any rank. Lines forwarded by Ray's log monitor carry a ``(RayTrainWorker pid=...)``
prefix and are deduplicated across processes, which is why the lines do not travel that way.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

PREFIX = "[espnet3]"
LOG_DIR = "logs"
DRIVER_LOG = "driver.log"
# Ray's notice that a new local cluster uses token authentication (see cluster/README.md).
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
# Ray Train's own actors; what they print is about Ray's internals, and real failures reach the
# driver as exceptions (TrainingFailedError) anyway.
RAY_TRAIN_ACTORS = ("TrainController", "PlacementGroupCleaner", "PreemptionWatcher")


def _of(value: int, total: int | None) -> str:
    return f"{value}/{total}" if total else str(value)


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "ETA ?"
    return f"ETA {timedelta(seconds=round(max(seconds, 0.0)))}"


def progress_line(
    epoch: int, max_epochs: int | None, step: int, total_steps: int | None,
    losses: Mapping[str, float], utt_per_s: float, eta_s: float | None,
    data_wait: float | None = None, audio_s_per_s: float | None = None,
) -> str:
    """``[espnet3] epoch 1/10 step 40/400 loss 12.3456 85.2 utt/s ETA 0:05:10 data_wait 4% 310.5 audio-s/s
    (RTF 0.0032)`` (``epoch`` is 1-based; ``utt/s ETA`` stay side by side for the greps that look for them).

    ``data_wait`` is the share (0..1) of the step time spent waiting for the next batch
    (:class:`~espnet3.orchestration.callbacks.ConsoleProgress`); ``audio_s_per_s`` the seconds of
    input audio trained per second (its inverse is the real-time factor); ``None`` leaves either out.
    """
    shown = " ".join(f"{name} {value:.4f}" for name, value in losses.items()) or "loss n/a"
    wait = "" if data_wait is None else f" data_wait {100 * data_wait:.0f}%"
    audio = "" if not audio_s_per_s else f" {audio_s_per_s:.1f} audio-s/s (RTF {1 / audio_s_per_s:.4f})"
    return (f"{PREFIX} epoch {_of(epoch, max_epochs)} step {_of(step, total_steps)} {shown} "
            f"{utt_per_s:.1f} utt/s {format_eta(eta_s)}{wait}{audio}")


def validation_line(epoch: int, max_epochs: int | None, step: int, metrics: Mapping[str, float]) -> str:
    """``[espnet3] epoch 1/10 valid acc 0.8123 loss 10.2 (step 400)``: the ``valid/*`` metrics, sorted."""
    shown = " ".join(f"{k.removeprefix('valid/')} {v:.4f}" for k, v in sorted(metrics.items()))
    return f"{PREFIX} epoch {_of(epoch, max_epochs)} valid {shown} (step {step})"


class DriverConsole:
    """Prints, on the driver, the lines workers put into :attr:`queue` (a ``ray.util.queue.Queue``).

    Use as a context manager around ``TorchTrainer.fit()``, which blocks the driver's main thread:
    a daemon thread prints the lines as they arrive, and leaving drains what is left.
    """

    def __init__(self) -> None:
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # num_cpus=0: the queue must never wait for a CPU the workers hold. On the driver's node:
        # a worker node may be lost (and replaced) while training goes on; the driver's may not.
        driver_node = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": driver_node})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="espnet3-console", daemon=True)

    def __enter__(self) -> DriverConsole:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._print_pending()
        self.queue.shutdown()

    def _run(self) -> None:
        from ray.exceptions import RayError
        from ray.util.queue import Empty

        while not self._stop.is_set():
            try:
                print(self.queue.get(timeout=0.5), flush=True)
            except Empty:
                continue
            except RayError:  # the queue is gone (its node died): the lines are in the rank logs
                return

    def _print_pending(self) -> None:
        from ray.exceptions import RayError

        try:
            lines = self.queue.get_nowait_batch(self.queue.qsize())
        except RayError:
            return
        for line in lines:
            print(line, flush=True)


def keep_ray_noise_in(log_dir: Path) -> None:
    """Send Ray's driver-side notices and its Train controller's output to ``log_dir/driver.log``.

    Ray prints its token-authentication notice whenever it starts a local cluster, and Ray Train's
    actors print Ray-internal errors no user can act on (the controller's ``PreemptionWatcher``
    restart caveat on every run, the placement-group cleaner's complaint when another Ray cluster
    runs on the machine); all stay readable in the file. Call before ``ray.init``: the actors'
    lines are caught in Ray's log dispatcher once ``ray.init`` installs it
    (:func:`route_controller_output`).
    """
    log_file = Path(log_dir) / DRIVER_LOG
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    auth = logging.getLogger(RAY_AUTH_LOGGER)
    auth.handlers = [handler]
    auth.propagate = False


def route_controller_output(log_dir: Path) -> bool:
    """After ``ray.init``: lines Ray forwards from Ray Train's actors (:data:`RAY_TRAIN_ACTORS`) go to ``driver.log``.

    Uses Ray's private log dispatcher (the only hook on what the driver prints); returns whether
    it could, so a Ray that changed it prints those lines as before.
    """
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return False
    printers = [handler for name, handler in dispatcher.handlers if name == "ray_print_logs"]
    if not printers:
        return False
    log_file = Path(log_dir) / DRIVER_LOG

    def dispatch(data: dict) -> None:
        source = str(data.get("actor_name") or data.get("task_name") or "")
        if source.startswith(RAY_TRAIN_ACTORS):
            with log_file.open("a") as out:
                out.writelines(f"({source} pid={data.get('pid')}) {line}\n" for line in data.get("lines", []))
            return
        printers[0](data)

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", dispatch)
    return True


class WorkerConsole:
    """A worker's end of the console: a line goes to this rank's log and, when the driver listens
    (``queue``), to the driver."""

    def __init__(self, queue=None) -> None:
        self.queue = queue

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.to_driver(line)

    def to_driver(self, line: str) -> None:
        if self.queue is None:
            return
        try:
            self.queue.put_nowait(line)
        except Exception:  # noqa: BLE001 - a lost console must not stop training; the log has the line
            self.queue = None
