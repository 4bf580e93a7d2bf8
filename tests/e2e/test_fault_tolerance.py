"""Faults from outside the code, end to end: a SIGKILLed worker, SIGTERM, runs side by side.

(A lost node, with and without notice, is in tests/e2e/test_spot_elastic.py.)

Every run here is a real ``python -m espnet3.launch`` subprocess of ``configs/tiny_asr.yaml``;
faults are made the way they happen (``kill -9`` of a worker process found in the process table,
a node's processes killed as a group), not by hooks inside espnet3. A run's attempts are counted
from its rank logs: every worker process start writes one ``===== <time> pid <pid> =====`` line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from paths import REPO, TINY
from runs import TIMEOUT_S, attempts, data_overrides, steps_per_epoch, train_result, train_workers, user_env, wait_for


# ------------------------------------------------------------------------------------ the tests
@pytest.mark.slow
@pytest.mark.timeout(2 * TIMEOUT_S)
def test_a_sigkilled_worker_is_replaced_then_sigterm_stops_quietly_and_resume_finishes(digits, tmp_path):
    """One run, two faults: a worker process SIGKILLed after the first checkpoint is replaced and
    resumes from it; then a scheduler's preemption (or `timeout`), SIGTERM to the launcher, makes
    every rank checkpoint at its next step and stops the run quietly, and the same command with
    --resume finishes the run from that step."""
    exp = tmp_path / "exp"
    ray_tmp = Path(f"/tmp/e3ft{os.getpid()}")  # its own cluster; short: Ray's socket paths have a length limit
    command = [sys.executable, "-m", "espnet3.launch", "--config", str(TINY), "--num-gpus", "0", "--num-workers", "2",
               "trainer.max_epochs=3", *data_overrides(exp, digits)]
    log = tmp_path / "first.log"
    with open(log, "w") as out:  # a file, not a pipe: nothing the launcher prints can block it
        proc = subprocess.Popen([*command, "--stages", "train"], cwd=tmp_path, env=user_env(RAY_TMPDIR=str(ray_tmp)),
                                stdout=out, stderr=out)
        try:
            wait_for(lambda: list(exp.glob("checkpoint_*/checkpoint.ckpt")), "the first checkpoint", proc)
            victim = wait_for(lambda: train_workers(proc.pid), "a train worker process", proc)[0]
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: attempts(exp) == 2, "the replacement worker group", proc)
            assert attempts(exp) == 2, "the worker group was started once more, and only once"
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=180)
        finally:
            proc.kill()
            shutil.rmtree(ray_tmp, ignore_errors=True)
    output = log.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "stopped by SIGTERM" in output and "--resume" in output
    assert "Traceback" not in output and "*** SIGTERM received" not in output, output[-3000:]
    assert not train_workers(proc.pid) and not (exp / "train_result.json").exists()
    stops = [m["preemption"] for m in map(json.loads, (p.read_text() for p in exp.glob("checkpoint_*/metrics.json")))
             if "preemption" in m]
    assert [s["reason"] for s in stops] == ["SIGTERM"], "one checkpoint, written for the SIGTERM"

    resumed = subprocess.run([*command, "--resume", "--stages", "train"], cwd=tmp_path, env=user_env(),
                             capture_output=True, text=True, timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed at step {stops[0]['checkpoint_step']} " in resumed.stdout, "from the SIGTERM's checkpoint"
    result = train_result(exp)
    assert result["epoch"] == 2 and result["step"] == 3 * steps_per_epoch(exp)
    assert (exp / "valid.loss.ave_2best.pth").is_file()


def _nan_data(root: Path) -> Path:
    """The digits corpus with every training waveform replaced by NaNs (a corrupted feature dump)."""
    from data_utils import digit_utterances, write_datadir

    train = write_datadir(root / "train", digit_utterances(16, seed=3, prefix="nan"))
    for wav in (train / "wav").glob("*.wav"):
        samples, rate = soundfile.read(str(wav))
        soundfile.write(str(wav), np.full_like(samples, np.nan, dtype=np.float32), rate, subtype="FLOAT")
    return train


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_a_failure_a_restart_cannot_cure_ends_the_run_at_once_despite_max_failures(digits, tmp_path):
    exp = tmp_path / "exp"
    train = _nan_data(tmp_path / "nan")
    proc = subprocess.run(
        [sys.executable, "-m", "espnet3.launch", "--config", str(TINY), "--num-gpus", "0", "--num-workers", "2",
         "max_failures=3", "max_nan_batches=2", *data_overrides(exp, digits), f"data.train={train}",
         "~data.digits", "--stages", "train"],
        cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "max_nan_batches" in proc.stderr and "Traceback" not in proc.stderr
    assert "Traceback" in (exp / "logs" / "rank0.log").read_text(), "the worker's traceback is kept in its log"
    assert attempts(exp, 0) == 1 and attempts(exp, 1) == 1, "a deterministic failure used up a retry"


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
def test_a_run_and_a_sweep_on_one_machine_both_finish(digits, tmp_path):
    """A launch and a Tune sweep at once, each with the Ray cluster it starts: with more than one
    Ray instance on the machine, a process that guesses "the" cluster fails (and a sweep hung)."""
    sweep = yaml.safe_load((REPO / "configs" / "sweep_tiny.yaml").read_text())
    sweep.update(base=str(TINY), output_dir=str(tmp_path / "sweep"), num_samples=1, max_concurrent_trials=1,
                 scheduler={"asha": {"max_t": 2, "grace_period": 1, "reduction_factor": 2}})
    sweep["overrides"] = [*sweep.get("overrides", []), "trainer.max_epochs=1",
                          *data_overrides(tmp_path / "unused", digits)[1:]]
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    runs = {}
    for name in ("a",):
        runs[name] = subprocess.Popen(
            [sys.executable, "-m", "espnet3.launch", "--config", str(TINY), "--num-gpus", "0", "--num-workers", "1",
             "trainer.max_epochs=1", *data_overrides(tmp_path / name, digits), "--stages", "train"],
            cwd=tmp_path, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    runs["sweep"] = subprocess.Popen(
        [sys.executable, "-m", "espnet3.launch", "--sweep", str(tmp_path / "sweep.yaml"), "--num-gpus", "0"],
        cwd=tmp_path, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        outputs = {name: proc.communicate(timeout=TIMEOUT_S)[0] for name, proc in runs.items()}
    finally:
        for proc in runs.values():
            proc.kill()
    for name, proc in runs.items():
        assert proc.returncode == 0, f"{name}: {outputs[name][-3000:]}"
    assert train_result(tmp_path / "a")["epoch"] == 0
    rows = (tmp_path / "sweep" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and ",TERMINATED," in rows[1]


HUNGRY_MODEL = '''
import os

import numpy as np
import torch


class Hungry(torch.nn.Module):
    """Keeps 1 GiB more host memory at every step, as an oversized batch would, until Ray kills it."""

    def __init__(self):
        super().__init__()
        with open(BUILDS, "a") as builds:  # one line per model built: per worker, per attempt
            builds.write(f"{os.getpid()}\\n")
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.held = []

    def forward(self, speech, speech_lengths, **_):
        if len(self.held) >= 40:
            raise RuntimeError("40 GiB held and Ray's memory monitor never killed this worker")
        self.held.append(np.ones(2**27))
        loss = (self.scale * speech).pow(2).mean()
        return loss, {"loss": loss.detach()}, torch.tensor(speech.shape[0])
'''


def _memory_threshold(headroom_gib: float) -> str:
    """A RAY_memory_usage_threshold that the machine crosses once ``headroom_gib`` more is in use."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total, available = (int(info[k].split()[0]) * 1024 for k in ("MemTotal", "MemAvailable"))
    return f"{min(0.95, (total - available + headroom_gib * 2**30) / total):.3f}"


def test_workers_killed_for_lack_of_memory_say_so_and_are_not_retried(digits, tmp_path):
    (tmp_path / "src").mkdir()
    builds = tmp_path / "builds.txt"
    (tmp_path / "src" / "hungry.py").write_text(f"BUILDS = {str(builds)!r}\n" + HUNGRY_MODEL)
    config = yaml.safe_load(TINY.read_text())
    config.pop("task")
    config["model"] = {"_target_": "src.hungry.Hungry"}
    config["data"].pop("test")  # a `_target_` model has no inference class to decode with
    config.pop("inference")
    (tmp_path / "hungry.yaml").write_text(yaml.safe_dump(config))
    exp = tmp_path / "exp"
    env = user_env(RAY_memory_usage_threshold=_memory_threshold(6.0), RAY_memory_monitor_refresh_ms="100")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "espnet3.launch", "--config", str(tmp_path / "hungry.yaml"), "--num-gpus", "0",
         "--num-workers", "2", "max_failures=3", *data_overrides(exp, digits)[:3], "~data.digits"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        stdout, stderr = launcher.communicate(timeout=TIMEOUT_S)
    finally:
        launcher.kill()
    proc = subprocess.CompletedProcess(launcher.args, launcher.returncode, stdout, stderr)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ran out of memory" in proc.stderr and "GB used of" in proc.stderr, proc.stderr[-2000:]
    assert "dataloader.batch_bins" in proc.stderr and "--num-workers" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Counted from the models built, not from the rank logs: the threshold is machine-wide, so with
    # another test's cluster growing next to this one, Ray's monitor has killed a worker while it
    # started, before it wrote its log (CI). Either way: one attempt of 2 workers, no retry.
    built = [pid for pid in (builds.read_text().split() if builds.exists() else []) if int(pid) != launcher.pid]
    assert len(built) <= 2, f"a memory kill used up a retry: {len(built)} models built by 2 workers"
    assert attempts(exp, 0) <= 1 and attempts(exp, 1) <= 1, "a memory kill used up a retry"
