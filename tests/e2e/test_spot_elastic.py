"""Spot nodes, lost nodes and elastic groups, end to end on a real multi-node Ray cluster on 127.0.0.1.

A head without CPUs (driver, Train controller) and two worker nodes of one CPU each, so the
elastic group ``--num-workers 1-2`` runs one rank per node. After the first checkpoint one worker
node gets the drain notice a spot reclaim sends (``ray drain-node --reason
DRAIN_NODE_REASON_PREEMPTION``, deadline 20 s) and is killed at the deadline, as the cloud would;
then a new node joins. The notice must be agreed on by both ranks, a checkpoint written at the
next step, the group must continue on the survivor and grow back when the new node joins. Then
the other original node dies without notice (all its processes killed at once): with
``max_failures=1`` the run must survive that too, on the node left, and finish every epoch, which
also shows that the preemption was not charged to ``max_failures``. ``train_result.json`` tells the
story.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from net_utils import RAY_BIN, alive_nodes, join_node, kill_node, start_head
from paths import TINY
from runs import TIMEOUT_S, data_overrides, steps_per_epoch, train_workers, wait_for
from spot import DEADLINE_S, PACE, spot_env

def _started(exp: Path, count: int) -> float | None:
    """When the ``count``-th worker group started (``exp_dir/attempts``), once it has."""
    starts = sorted(json.loads(p.read_text())["started"] for p in exp.glob("attempts/attempt-*.json"))
    return starts[count - 1] if len(starts) >= count else None


def _attempt_sizes(exp: Path) -> list[tuple[float, int]]:
    """(start time, world size) of every worker group started so far."""
    return sorted((r["started"], r["world_size"]) for r in map(json.loads, (
        p.read_text() for p in exp.glob("attempts/attempt-*.json"))))


def _checkpointed_with_two(exp: Path) -> bool:
    """Whether the group now running has both workers and has written a checkpoint. Under a busy
    suite the first group can start with one worker (the other node's not placeable yet) and
    grow a few seconds later: a drain before that would find no rank on the spot node."""
    sizes = _attempt_sizes(exp)
    if not sizes or sizes[-1][1] != 2:
        return False
    return any(p.stat().st_mtime > sizes[-1][0] for p in exp.glob("checkpoint_*/metrics.json"))


def _reports(exp: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(exp.glob("checkpoint_*/metrics.json"))]


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 300)
def test_a_drained_spot_node_costs_no_step_the_group_shrinks_grows_back_and_survives_a_lost_node(
        digits, tmp_path, monkeypatch):
    ray_tmp = Path(f"/tmp/e3spot{os.getpid()}")
    env = spot_env(ray_tmp)
    head, address, _ = start_head(env, "--num-cpus=0")  # the driver and Ray Train's controller only
    nodes = [head]
    exp = tmp_path / "exp"
    try:
        nodes.append(join_node(env, address, 2, "--num-cpus=1"))
        nodes.append(join_node(env, address, 3, "--num-cpus=1", '--resources={"spot": 1}'))
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "pace.py").write_text(PACE)
        log = tmp_path / "launch.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "espnet3.launch", "--config", str(TINY), "--num-gpus", "0",
                 "--num-workers", "1-2", "--address", address, "trainer.max_epochs=20", "max_failures=1",
                 "callbacks=[{_target_: src.pace.Pace}]",
                 "elastic_resize_monitor_interval_s=5", "timeouts.worker_start_s=180",
                 *data_overrides(exp, digits), "--stages", "train"],
                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
            )
        try:
            def logs() -> tuple[Path, ...]:
                return (log, *sorted(exp.glob("logs/rank*.log")))

            wait_for(lambda: _checkpointed_with_two(exp), "a checkpoint of the two-worker group", proc,
                      logs=logs())
            first_step = max(r["step"] for r in _reports(exp))
            started_before = len(_attempt_sizes(exp))
            spot = next(node for node, resources in alive_nodes(address, env).items() if "spot" in resources)
            drained_at = time.time()
            subprocess.run([str(RAY_BIN), "drain-node", f"--address={address}", f"--node-id={spot}",
                            "--reason=DRAIN_NODE_REASON_PREEMPTION", "--reason-message=spot reclaim",
                            f"--deadline-remaining-seconds={DEADLINE_S}"], env=env, check=True,
                           capture_output=True, timeout=60)
            wait_for(lambda: any("preemption" in r for r in _reports(exp)), "the preemption checkpoint", proc,
                      timeout=DEADLINE_S + 30, logs=logs())
            noticed = time.time()
            time.sleep(max(0.0, drained_at + DEADLINE_S - time.time()))
            kill_node(nodes[2])  # the reclaim, at its deadline
            # The survivor's restart with one worker, before a new node joins: a busy machine can
            # take a minute to start a worker, and a node joining meanwhile has the resize monitor
            # replace the group before it ever recorded its start (seen in a fresh-clone suite).
            wait_for(lambda: _started(exp, started_before + 1), "the survivor's restart", proc, logs=logs())
            nodes.append(join_node(env, address, 3, "--num-cpus=1", cpus=2))  # a new spot node joins
            grown = wait_for(lambda: _started(exp, started_before + 2), "the group to grow back", proc, logs=logs())
            wait_for(lambda: any(p.stat().st_mtime > grown for p in exp.glob("checkpoint_*/metrics.json")),
                      "a checkpoint of the grown group", proc, logs=logs())
            assert train_workers(nodes[1].pid), "a rank runs on the first worker node"
            kill_node(nodes[1])  # lost without notice
            proc.wait(timeout=TIMEOUT_S)
        finally:
            proc.kill()
        output = log.read_text()
        assert proc.returncode == 0, output[-4000:]
        assert noticed - drained_at < DEADLINE_S, "the checkpoint was written before the deadline"
        result = json.loads((exp / "train_result.json").read_text())
        assert result["metrics"]["epoch"] == 19
        # Every epoch whole (a resumed one re-dealt; Lightning would otherwise cut the epochs after
        # it short): the planned optimizer steps, give or take one per re-dealt epoch's rounding.
        monkeypatch.syspath_prepend(str(tmp_path))  # the run's train.yaml names the recipe's src.pace
        planned = 20 * steps_per_epoch(exp)
        assert planned <= result["metrics"]["step"] <= planned + len(result["resizes"])
        (preemption,) = result["preemptions"]
        assert preemption["checkpoint_step"] > first_step and preemption["noticed_at"] >= drained_at - 1
        assert preemption["world_size_before"] == 2 and preemption["world_size_after"] == 1
        assert preemption["steps_repeated"] == 0
        resizes = [(r["world_size_before"], r["world_size_after"], r["reason"]) for r in result["resizes"]]
        assert resizes in ([(2, 1, "preemption"), (1, 2, "grow"), (2, 1, "shrink")],
                           [(1, 2, "grow"), (2, 1, "preemption"), (1, 2, "grow"), (2, 1, "shrink")])
        shrunk = result["resizes"][-3]
        assert shrunk["accumulate_grad_batches"] == 2 and shrunk["global_batch_ratio"] == 1.0
        assert "preemption notice" in output and "with 1 of 2 workers: accumulate_grad_batches 2" in output
    finally:
        for node in reversed(nodes):
            kill_node(node)
        shutil.rmtree(ray_tmp, ignore_errors=True)
