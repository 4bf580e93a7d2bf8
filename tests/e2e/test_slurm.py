"""SLURM: the --slurm options, the checks against the cluster, and the sbatch script espnet3 writes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from espnet3 import launch
from espnet3.orchestration.slurm import SCRIPT, Node, Partition, SlurmSpec, _gpus, output_file, without_option
from paths import REPO
from runs import data_overrides, user_env, wait_for

TINY = "configs/tiny_asr.yaml"


def test_options_parse_with_sbatch_names_and_types():
    spec = SlurmSpec.parse("partition=gpu,time=24:00:00,gpus_per_node=4,nodes=2,signal-s=300")
    assert (spec.partition, spec.time, spec.gpus_per_node, spec.nodes, spec.signal_s) == ("gpu", "24:00:00", 4, 2, 300)
    assert SlurmSpec.parse("") == SlurmSpec()


@pytest.mark.parametrize("text, message", [
    ("partiton=gpu", "unknown option 'partiton'; did you mean partition?"),
    ("nodes=two", "nodes=two: expected a whole number"),
    ("time", "key=value pairs"),
    ("nodes=0", "nodes and signal_s must be >= 1"),
])
def test_bad_options_are_usage_errors(text, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        launch.parse_args(["--config", TINY, "--slurm", text])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


PARTITIONS = {
    "cpu": Partition((Node(0, 16, 64000), Node(0, 16, 64000)), "1-00:00:00", default=True),
    "gpu": Partition((Node(4, 32, 256000), Node(8, 64, 512000)), "infinite"),
}


def test_checks_against_the_partitions_sinfo_lists():
    SlurmSpec(partition="gpu", gpus_per_node=8, nodes=1).check(8, 9, PARTITIONS)
    with pytest.raises(ValueError, match="no such partition; use one of cpu, gpu"):
        SlurmSpec(partition="gpus").check(0, 3, PARTITIONS)
    with pytest.raises(ValueError, match="at most 8 GPU"):
        SlurmSpec(partition="gpu", gpus_per_node=16).check(0, 3, PARTITIONS)
    with pytest.raises(ValueError, match="--num-gpus 8 does not fit.*nodes=1,gpus_per_node=4"):
        SlurmSpec(partition="gpu", gpus_per_node=4).check(8, 3, PARTITIONS)
    assert [_gpus(g) for g in ("(null)", "gpu:4", "gpu:a100:8(S:0-1)", "gpu:2,gpu:a100:2")] == [0, 4, 8, 4]


@pytest.mark.parametrize("spec, cpus, message", [
    (SlurmSpec(), 17, "asks for 17 CPUs per node .* partition cpu have at most 16: lower --num-workers"),
    (SlurmSpec(partition="cpu", cpus_per_node=20), 3, r"asks for 20 CPUs per node \(cpus_per_node\)"),
    (SlurmSpec(partition="gpu", nodes=2, gpus_per_node=8), 3, "nodes=2: partition gpu has 1 node"),
    (SlurmSpec(partition="cpu", mem="100G"), 3, "mem=100G: the nodes of partition cpu have at most 64000 MB"),
    (SlurmSpec(partition="cpu", time="2-00:00:00"), 3, "time=2-00:00:00: partition cpu allows at most 1-00:00:00"),
], ids=["cpus", "cpus_per_node", "nodes", "mem", "time"])
def test_a_job_no_node_of_the_partition_can_run_is_refused_naming_what_it_has(spec, cpus, message):
    """The default partition (sinfo's `*`) when none is named; CPUs, GPUs, memory, nodes, time."""
    with pytest.raises(ValueError, match=message):
        spec.check(0, cpus, PARTITIONS)
    SlurmSpec(partition="cpu", mem="16G", time="12:00:00", nodes=2).check(0, 16, PARTITIONS)


def test_the_script_asks_for_the_warning_relays_it_and_requeues_a_stopped_run():
    spec = SlurmSpec(partition="debug", time="00:10:00", signal_s=60, max_requeues=3)
    script = spec.script(["--config", "x.yaml", "--num-gpus", "0"], "/runs/exp", "tiny", 3, python="/venv/bin/python")
    for line in ("#SBATCH --signal=B:USR1@60", "#SBATCH --requeue", "#SBATCH --partition=debug",
                 "#SBATCH --time=00:10:00", "#SBATCH --cpus-per-task=3", "#SBATCH --output=/runs/exp/slurm/slurm-%j.out",
                 "trap 'kill -TERM $pid' USR1 TERM", 'scontrol requeue "$SLURM_JOB_ID"'):
        assert line in script, line
    assert '"${SLURM_RESTART_COUNT:-0}" -lt 3' in script and "resume=(--resume)" in script
    assert "/venv/bin/python -m espnet3.launch --config x.yaml --num-gpus 0" in script
    assert "symmetric-run" not in script
    multi = SlurmSpec(nodes=2, gpus_per_node=4).script(["--config", "x.yaml"], "/e", "n", 9, python="/venv/bin/python")
    assert "--gpus-per-node=4" in multi and '/venv/bin/ray symmetric-run --address "$head:6379"' in multi


def test_the_job_runs_the_same_command_without_slurm():
    argv = ["--config", "x.yaml", "--slurm", "time=1:00", "--num-gpus", "0", "--slurm=nodes=2", "seed=3"]
    assert without_option(argv, "--slurm") == ["--config", "x.yaml", "--num-gpus", "0", "seed=3"]


def test_without_slurm_the_launcher_exits_2_naming_the_option(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without sinfo
    code = launch.main(["--config", TINY, "--num-gpus", "0", "--slurm", "time=00:05:00", f"exp_dir={tmp_path}/exp"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--slurm" in err and "sinfo" in err and "login node" in err


# ------------------------------------------------------------------------------ a real SLURM
@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    from slurm_local import LocalSlurm, install

    problem = install()
    if problem:
        pytest.skip(problem)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    problem = cluster.start()
    if problem:
        cluster.stop()
        pytest.skip(problem)
    yield cluster
    subprocess.run(["scancel", "--user", "root"], env=cluster.env, capture_output=True)
    cluster.stop()


PACE = """
import time
import lightning as L


class Pace(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(0.5)
"""


def _submit(slurm, cwd: Path, argv: list[str]) -> str:
    """``python -m espnet3.launch ... --slurm ...`` from ``cwd`` (with the pacing callback in its
    ``src/``): the id of the job it submitted."""
    (cwd / "src").mkdir(parents=True)
    (cwd / "src" / "pace.py").write_text(PACE)
    proc = subprocess.run([sys.executable, "-m", "espnet3.launch", *argv], cwd=cwd,
                          env={**user_env(), "SLURM_CONF": slurm.env["SLURM_CONF"]}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return re.search(r"submitted SLURM job (\d+)", proc.stdout).group(1)


def _warn_and_wait_for_the_end(slurm, job: str, log: Path) -> str:
    """SLURM's walltime warning (USR1 to the batch shell, as `--signal=B:USR1@...` sends it), then
    the requeue and the requeued job's end: its output."""
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=slurm.env, check=True, capture_output=True)
    # SLURM holds a requeued job for its credential lifetime (AuthInfo cred_expire, 20 s here) so that
    # the revoked credential of the first run cannot refuse the second; released early by hand
    # (`scontrol update StartTime=now`), the requeued run ended FAILED in CI without printing a line.
    wait_for(lambda: slurm.job_state(job) == "PENDING", "the job to requeue", timeout=300, logs=(log,))
    wait_for(lambda: slurm.job_state(job) in ("COMPLETED", "FAILED", "CANCELLED"), "the requeued job to end",
              timeout=400, logs=(log,))
    text = log.read_text()
    assert slurm.job_state(job) == "COMPLETED", text[-3000:] + slurm.diagnosis(job)
    assert f"requeueing SLURM job {job}" in text
    return text


def test_a_run_asking_for_more_cpus_than_the_test_slurms_node_has_is_refused_before_sbatch(slurm, digits, tmp_path):
    """The one node declares its real CPU count (sinfo's); one worker more than it can host (plus
    the driver's CPU) would stay PENDING forever: exit 2 naming what the partition has, no job."""
    node_cpus = int(subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], env=slurm.env, capture_output=True, text=True,
                                   check=True).stdout.split()[0])
    proc = subprocess.run(
        [sys.executable, "-m", "espnet3.launch", "--config", str(REPO / TINY), "--num-gpus", "0", "--num-workers",
         str(node_cpus), "--slurm", "partition=debug", *data_overrides(tmp_path / "exp", digits)],
        cwd=tmp_path, env={**user_env(), "SLURM_CONF": slurm.env["SLURM_CONF"]}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (f"asks for {node_cpus + 1} CPUs per node" in proc.stderr
            and f"partition debug have at most {node_cpus}: lower --num-workers" in proc.stderr), proc.stderr
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], env=slurm.env, capture_output=True, text=True).stdout
    assert not queue.strip(), f"no job was submitted: {queue}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_submitted_run_and_sweep_checkpoint_at_the_warning_requeue_and_finish(slurm, digits, tmp_path):
    """A run and a sweep submitted through the launcher, side by side on the one-node SLURM (they
    mostly wait, so together they take little longer than the sweep alone); each gets SLURM's
    walltime warning mid-training and must checkpoint, requeue and finish (see the two checks)."""
    from concurrent.futures import ThreadPoolExecutor

    run = tmp_path / "run"
    run_job = _submit(slurm, run, [
        "--config", str(REPO / TINY), "--num-gpus", "0", "--num-workers", "1", "trainer.max_epochs=6",
        "callbacks=[{_target_: src.pace.Pace}]", *data_overrides(run / "exp", digits),
        "--slurm", "partition=debug,time=00:30:00,signal_s=60,max_requeues=2"])
    status = subprocess.run([sys.executable, "-m", "espnet3.status", str(run / "exp")], capture_output=True, text=True,
                            env={**user_env(), "SLURM_CONF": slurm.env["SLURM_CONF"]}, timeout=60)
    # SLURM's state and reason while it waits (or the launcher's own, once the job has started)
    assert re.search(rf"state: (SLURM job {run_job}: (PENDING|RUNNING|CONFIGURING)|running)", status.stdout), status
    sweep = tmp_path / "sweep"
    sweep_job = _submit_sweep(slurm, sweep, digits)
    with ThreadPoolExecutor(2) as pool:
        checks = [pool.submit(_check_run, slurm, run_job, run / "exp"),
                  pool.submit(_check_sweep, slurm, sweep_job, sweep / "out")]
        for check in checks:
            check.result()


def _check_run(slurm, job: str, exp: Path) -> None:
    """The tiny ASR job: the warning must checkpoint, requeue the job and finish every epoch in the
    same exp_dir, repeating no optimizer step, then evaluate."""
    script = (exp / SCRIPT).read_text()
    assert "--slurm" not in script and "#SBATCH --signal=B:USR1@60" in script
    log = Path(output_file(exp, job))
    wait_for(lambda: list(exp.glob("checkpoint_*/checkpoint.ckpt")), "the first checkpoint", timeout=300,
              logs=(log,))
    text = _warn_and_wait_for_the_end(slurm, job, log)
    result = json.loads((exp / "train_result.json").read_text())
    assert result["metrics"]["epoch"] == 5
    (requeue,) = result["requeues"]
    assert requeue["job_id"] == job and requeue["restart_count"] == 1
    (stop,) = [p for p in result["preemptions"] if p["reason"] == "SIGTERM"]
    assert f"resumed at step {stop['checkpoint_step']} " in text, "the requeued job went on from the warning's step"
    assert set(json.loads((exp / "infer" / "test" / "metrics.json").read_text())) == {"cer", "wer"}


def _submit_sweep(slurm, cwd: Path, digits: Path) -> str:
    """A 2-trial sweep in one allocation, one trial at a time."""
    import yaml

    sweep = {
        "base": str(REPO / TINY), "output_dir": str(cwd / "out"),
        "overrides": ["trainer.max_epochs=4", "callbacks=[{_target_: src.pace.Pace}]"],
        "space": {"optimizer.lr": {"grid": [0.002, 0.001]}}, "metric": "valid/loss", "mode": "min",
        "num_samples": 1, "max_concurrent_trials": 1, "workers_per_trial": 1, "cpus_per_worker": 1,
    }
    cwd.mkdir(parents=True)
    (cwd / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    data = [f"data.train={digits}/train", f"data.valid={digits}/valid", f"data.test.test={digits}/test"]
    return _submit(slurm, cwd, ["--sweep", "sweep.yaml", "--num-gpus", "0", *data, "--slurm",
                                "partition=debug,time=00:30:00,signal_s=60,max_requeues=2,cpus_per_node=2"])


def _check_sweep(slurm, job: str, out: Path) -> None:
    """SLURM's warning while the second trial trains must checkpoint it at its step, requeue the
    job, and the requeued sweep must finish that trial from there without training the finished
    first trial again."""
    import csv

    log = Path(output_file(out, job))

    def trials() -> list[Path]:
        return sorted((out / "trials").glob("*/train.yaml"), key=lambda p: p.stat().st_mtime)

    # The second trial trains (a checkpoint of its own) while the first one is done.
    wait_for(lambda: len(trials()) == 2 and list(trials()[1].parent.glob("checkpoint_*/checkpoint.ckpt")),
              "the second trial's first checkpoint", timeout=400, logs=(log,))
    first, second = (p.parent for p in trials())
    first_checkpoints = sorted(p.name for p in first.glob("checkpoint_*"))
    text = _warn_and_wait_for_the_end(slurm, job, log)
    assert "stopped by SIGTERM" in text
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["status"] for r in rows) == ["TERMINATED", "TERMINATED"]
    # The first trial was not trained again: one start, the same checkpoints.
    assert len(list((first / "attempts").glob("attempt-*.json"))) == 1
    assert sorted(p.name for p in first.glob("checkpoint_*")) == first_checkpoints
    # The second resumed from the checkpoint written at the warning, and finished every epoch.
    stops = [json.loads(p.read_text()) for p in second.glob("checkpoint_*/metrics.json")]
    (stop,) = [m for m in stops if m.get("preemption", {}).get("reason") == "SIGTERM"]
    starts = sorted((json.loads(p.read_text()) for p in (second / "attempts").glob("attempt-*.json")),
                    key=lambda a: a["started"])
    assert [a["resumed_step"] for a in starts] == [None, stop["step"]]
    assert max(m["epoch"] for m in stops) == 3
    (requeue,) = [json.loads(p.read_text()) for p in (out / "requeues").glob("requeue-*.json")]
    assert requeue["job_id"] == job and requeue["restart_count"] == 1


def test_the_job_of_a_sweep_asks_for_the_cpus_of_its_concurrent_trials(tmp_path, capsys, monkeypatch):
    """2 trials at once x (1 worker x 1 CPU + the trial's 0.25) + the driver: 4 CPUs, not the 3 of a
    2-worker run; the script is written, not submitted (--dry-run, and no sinfo is asked)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("espnet3.orchestration.slurm.query_partitions", lambda: {"debug": Partition((Node(0, 8, 8000),))})
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text((REPO / "configs" / "sweep_tiny.yaml").read_text().replace(
        "base: tiny_asr.yaml", f"base: {REPO / TINY}") + f"output_dir: {tmp_path / 'out'}\n")
    assert launch.main(["--sweep", str(sweep), "--num-gpus", "0", "--slurm", "partition=debug", "--dry-run"]) == 0
    script = (tmp_path / "out" / SCRIPT).read_text()
    assert "#SBATCH --cpus-per-task=4" in script and "--sweep" in script


def test_the_stop_board_settles_once_every_running_trial_has_its_checkpoint():
    from espnet3.orchestration.preemption import StopBoard

    board = StopBoard()
    board.enter("a"), board.enter("b")
    assert not board.settled()  # nothing asked
    board.ask("SIGTERM")
    board.leave("a")  # finished before it saw the request
    assert not board.settled()
    board.stopped("b")
    assert board.settled()
    board.enter("c")  # started while the sweep was being stopped: its first step checkpoints too
    assert not board.settled()
    board.stopped("c")
    assert board.settled() and board.get()["reason"] == "SIGTERM"
