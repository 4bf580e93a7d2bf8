"""A spot node reclaimed under a sweep trial, end to end on a real multi-node Ray cluster on 127.0.0.1.

A head without CPUs and two worker nodes of two CPUs each; one trial of one 2-CPU worker. The
trial function (0.25 CPU) takes part of one node, so its worker can only run on the other: that
node gets the drain notice a spot reclaim sends and is killed at the deadline, then a new node
joins. The trial's ranks must checkpoint at the step after the notice, its Ray Train run must wait
for the replacement and go on from that step (not from the last validation, and not as a new Tune
trial), and Tune (ASHA) must see one report per epoch, in order, without a gap or a repeat.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from net_utils import RAY_BIN, alive_nodes, join_node, kill_node, start_head
from paths import TINY
from runs import TIMEOUT_S, train_workers, wait_for
from spot import DEADLINE_S, PACE, spot_env

EPOCHS = 6


def _trial_reports(trial: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(trial.glob("checkpoint_*/metrics.json"))]


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 300)
def test_a_drained_node_under_a_sweep_trial_costs_no_step_and_tune_sees_every_epoch_once(digits, tmp_path):
    ray_tmp = Path(f"/tmp/e3spotsweep{os.getpid()}")
    env = spot_env(ray_tmp)
    head, address, _ = start_head(env, "--num-cpus=0")  # the driver and Ray Train's controller only
    nodes = [head]
    out = tmp_path / "out"
    try:
        for label in ("a", "b"):  # one at a time: two `ray start`s at once on one machine can collide
            nodes.append(join_node(env, address, len(nodes) + 1, "--num-cpus=2", f'--resources={{"{label}": 1}}'))
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "pace.py").write_text(PACE)
        sweep = {
            "base": str(TINY), "output_dir": str(out),
            "overrides": [f"trainer.max_epochs={EPOCHS}", "callbacks=[{_target_: src.pace.Pace}]",
                          "timeouts.worker_start_s=180", f"data.train={digits}/train",
                          f"data.valid={digits}/valid", f"data.test.test={digits}/test"],
            "space": {"optimizer.lr": {"grid": [0.002]}}, "metric": "valid/loss", "mode": "min",
            "num_samples": 1, "max_concurrent_trials": 1, "workers_per_trial": 1, "cpus_per_worker": 2,
            "scheduler": {"asha": {"max_t": EPOCHS, "grace_period": 1, "reduction_factor": 2}},
        }
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
        log = tmp_path / "launch.log"
        with open(log, "w") as stream:
            proc = subprocess.Popen(
                [sys.executable, "-m", "espnet3.launch", "--sweep", "sweep.yaml", "--num-gpus", "0",
                 "--address", address],
                cwd=tmp_path, env=env, stdout=stream, stderr=subprocess.STDOUT, text=True,
            )
        try:
            def trial() -> Path | None:
                found = list(out.glob("trials/*/train.yaml"))
                return found[0].parent if found else None

            def logs() -> tuple[Path, ...]:
                return (log, *sorted(out.glob("trials/*/logs/rank*.log")))

            wait_for(lambda: trial() and list(trial().glob("checkpoint_*/checkpoint.ckpt")),
                      "the trial's first checkpoint", proc, logs=logs())
            exp = trial()
            first_step = max(r["step"] for r in _trial_reports(exp))
            (victim,) = [i for i in (1, 2) if train_workers(nodes[i].pid)]
            label = "a" if victim == 1 else "b"
            node_id = next(n for n, resources in alive_nodes(address, env).items() if label in resources)
            drained_at = time.time()
            subprocess.run([str(RAY_BIN), "drain-node", f"--address={address}", f"--node-id={node_id}",
                            "--reason=DRAIN_NODE_REASON_PREEMPTION", "--reason-message=spot reclaim",
                            f"--deadline-remaining-seconds={DEADLINE_S}"], env=env, check=True,
                           capture_output=True, timeout=60)
            wait_for(lambda: any("preemption" in r for r in _trial_reports(exp)), "the preemption checkpoint",
                      proc, timeout=DEADLINE_S + 30, logs=logs())
            noticed = time.time()
            time.sleep(max(0.0, drained_at + DEADLINE_S - time.time()))
            kill_node(nodes[victim])  # the reclaim, at its deadline
            nodes.append(join_node(env, address, 3, "--num-cpus=2", cpus=4))  # the replacement
            proc.wait(timeout=TIMEOUT_S)
        finally:
            proc.kill()
        output = log.read_text()
        assert proc.returncode == 0, output[-4000:]
        assert noticed - drained_at < DEADLINE_S, "the checkpoint was written before the deadline"

        # The trial's own run (its history as a run's train_result.json lists it): the notice
        # checkpointed at the next step, the replacement went on from there.
        from espnet3.orchestration.elastic import history, read_attempts
        from espnet3.orchestration.pruning import read_reports

        assert max(r["epoch"] for r in _trial_reports(exp)) == EPOCHS - 1
        (preemption,) = history(read_attempts(exp), read_reports(str(exp)))["preemptions"]
        assert preemption["checkpoint_step"] > first_step and preemption["steps_repeated"] == 0
        starts = sorted((json.loads(p.read_text()) for p in (exp / "attempts").glob("attempt-*.json")),
                        key=lambda a: a["started"])
        assert [a["resumed_step"] for a in starts] == [None, preemption["checkpoint_step"]]

        # Tune: one trial, finished, and one report per epoch in order (the notice's checkpoint is not a report).
        with open(out / "results.csv") as f:
            (row,) = list(csv.DictReader(f))
        assert row["status"] == "TERMINATED" and int(row["iterations"]) == EPOCHS, row
        (results,) = [p for p in out.rglob("result.json") if p.parent != exp]
        reports = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        assert [r["training_iteration"] for r in reports] == list(range(1, EPOCHS + 1))
        assert [r["epoch"] for r in reports] == list(range(EPOCHS))
    finally:
        for node in reversed(nodes):
            kill_node(node)
        shutil.rmtree(ray_tmp, ignore_errors=True)
