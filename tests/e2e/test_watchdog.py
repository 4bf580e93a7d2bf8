"""The stall watchdog: a rank blocked forever is found, shown and ended, and the run restarts.

The end-to-end case is a real 2-rank run (gloo) whose own callback blocks rank 1 for good after a
step of the first attempt; the other rank waits for it in Lightning's next collective.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from espnet3.orchestration.watchdog import (STALL_FLOOR_S, STALL_STEPS, RankState, find_stall, find_stragglers,
                                           stall_threshold)
from paths import TINY
from runs import TIMEOUT_S, attempts, data_overrides, user_env, wait_for

BLOCK = """
import json, os, threading, time
import lightning as L


class Block(L.Callback):
    '''In the first attempt only, rank 1 is slow (a straggler: its model's forward takes 0.3 s more)
    and never returns from step {step}'s end.'''

    def setup(self, trainer, pl_module, stage):
        if trainer.global_rank == 1 and not os.path.exists({marker!r}):
            forward = pl_module.model.forward

            def slow_forward(*args, **kwargs):
                time.sleep(0.3)
                return forward(*args, **kwargs)

            pl_module.model.forward = slow_forward

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        marker = {marker!r}
        if trainer.global_rank == 1 and trainer.global_step == {step} and not os.path.exists(marker):
            with open(marker, "w") as f:
                json.dump({{"blocked_at": time.time()}}, f)
            threading.Event().wait()
"""


def state(rank: int, step: int, phase: str, progress: float, steps_done: int = 10, median: float | None = 0.5):
    return RankState(rank=rank, pid=100 + rank, host="h", started=0.0, step=step, phase=phase, progress=progress,
                     steps_done=steps_done, median_step_s=median)


def test_the_rank_furthest_behind_is_named_once_no_rank_progressed_for_the_threshold():
    # rank 1 stuck after step 5's end; rank 0 went on into step 6's backward (waiting for rank 1)
    states = {0: state(0, 5, "backward", progress=100.0), 1: state(1, 5, "after step", progress=99.0)}
    assert find_stall(states, stall_s=30, now=129.0) is None, "rank 0 progressed 29 s ago"
    ranks, idle = find_stall(states, stall_s=30, now=131.0)
    assert ranks == [1] and idle == pytest.approx(31.0)
    # a rank that finished fewer steps is behind, whatever its phase
    states[1] = state(1, 4, "optimizer", progress=99.0)
    assert find_stall(states, stall_s=30, now=200.0)[0] == [1]


def test_a_rank_doing_half_again_the_other_ranks_median_work_per_step_is_a_straggler():
    def busy(rank, seconds, steps_done=10):
        st = state(rank, 5, "forward", 0.0, steps_done=steps_done)
        st.busy_s = seconds
        return st

    assert find_stragglers({0: busy(0, 0.10), 1: busy(1, 0.12), 2: busy(2, 0.40)}) == {2: pytest.approx(0.11)}
    assert find_stragglers({0: busy(0, 0.10), 1: busy(1, 0.16)}) == {1: 0.10}, "two ranks: against the other one"
    assert find_stragglers({0: busy(0, 0.010), 1: busy(1, 0.030)}) == {}, "3x, but 20 ms: noise, not a straggler"
    assert find_stragglers({0: busy(0, 0.1), 1: busy(1, 0.5, steps_done=1)}) == {}, "not before its warm-up"


def test_the_default_threshold_follows_the_runs_own_pace_and_waits_for_it():
    fast = {0: state(0, 5, "data", 0.0, median=0.5), 1: state(1, 5, "data", 0.0, median=0.4)}
    assert stall_threshold(fast, None) == STALL_FLOOR_S
    slow = {0: state(0, 5, "data", 0.0, median=30.0)}
    assert stall_threshold(slow, None) == STALL_STEPS * 30.0
    warming = {0: state(0, 1, "forward", 0.0, steps_done=1, median=None), 1: state(1, 1, "forward", 0.0)}
    assert find_stall(warming, None, now=1e6) is None, "no pace before every rank's warm-up steps"


def test_gpu_runs_turn_on_rays_nccl_hang_detector_in_observe_mode_unless_the_user_chose():
    from espnet3.orchestration.watchdog import enable_nccl_hang_detector

    assert enable_nccl_hang_detector(False, {}) == {}
    environ = {}
    enable_nccl_hang_detector(True, environ)
    assert environ == {"RAY_TRAIN_ENABLE_NCCL_HANG_DETECTOR": "1", "RAY_TRAIN_NCCL_RAS_ACTION": "observe"}
    chosen = {"RAY_TRAIN_NCCL_RAS_ACTION": "fail"}
    enable_nccl_hang_detector(True, chosen)
    assert chosen["RAY_TRAIN_NCCL_RAS_ACTION"] == "fail"


def _status(exp: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "espnet3.status", str(exp)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 120)
def test_a_blocked_rank_is_found_its_stacks_written_and_the_attempt_restarted(digits, tmp_path):
    """Also `python -m espnet3.status` on the running run (its stage, progress and every rank's
    place) and on the finished one."""
    exp, marker, log = tmp_path / "exp", tmp_path / "blocked.json", tmp_path / "launch.log"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "block.py").write_text(BLOCK.format(step=5, marker=str(marker)))
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "espnet3.launch", "--config", str(TINY), "--num-gpus", "0", "--num-workers", "2",
             "trainer.max_epochs=3", "max_failures=1", "timeouts.stall_s=15", "callbacks=[{_target_: src.block.Block}]",
             *data_overrides(exp, digits), "--stages", "train"],
            cwd=tmp_path, env=user_env(), stdout=out, stderr=subprocess.STDOUT, text=True,
        )
    try:
        # while rank 1 is blocked: the status shows the run, its progress and both ranks' places
        wait_for(lambda: marker.exists() and "rank 1 on" in _status(exp), "a status with the ranks", proc,
                  logs=(log,))
        running = _status(exp)
        assert "state: running, stage train" in running and "progress: epoch" in running, running
        proc.wait(timeout=TIMEOUT_S)
    finally:
        proc.kill()
    out = log.read_text()
    assert proc.returncode == 0, out[-4000:]
    (slow,) = [l for l in out.splitlines() if l.startswith("[espnet3] straggler:")]
    assert slow.startswith("[espnet3] straggler: rank 1 on "), slow
    (line,) = [l for l in out.splitlines() if l.startswith("[espnet3] stall:")]
    assert "behind: rank 1 " in line and "after step, last step 5" in line, line
    assert "Stacks of 2/2 ranks" in line and str(exp / "logs" / "stall-1") in line, line
    stacks = {r: (exp / "logs" / "stall-1" / f"rank{r}.txt").read_text() for r in (0, 1)}
    assert "block.py" in stacks[1], "the stalled rank's stack shows where it is stuck"
    assert "torch/distributed" in stacks[0], "the other rank waits for it in Lightning's next collective"
    found_at = (exp / "logs" / "stall-1" / "rank1.txt").stat().st_mtime
    assert found_at - json.loads(marker.read_text())["blocked_at"] < 180, "found within 3 minutes"
    assert attempts(exp) == 2, "the stalled attempt ended and Ray Train restarted the group once"
    assert json.loads((exp / "train_result.json").read_text())["metrics"]["step"] > 5, "and the run finished"
    finished = _status(exp)
    assert "state: finished" in finished and "attempts: 2 (world sizes 2, 2)" in finished, finished
    assert "finished training:" in finished and "last checkpoint:" in finished, finished
