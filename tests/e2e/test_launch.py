"""python -m espnet3.launch: pre-flight errors, run-directory safety, and real Ray Train runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from espnet3 import launch
from espnet3.orchestration.cluster import API_SERVER_ENV
from net_utils import RAY_BIN, kill_node, ray_logs_tail, start_head, token_auth
from paths import TINY



def _launch_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "espnet3.launch", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_config_error_is_reported_before_any_worker_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("optimizer:", "optimiser:"))
    started = time.monotonic()
    proc = _launch_cli("--config", str(bad), "--num-gpus", "0", cwd=tmp_path)
    assert proc.returncode != 0
    assert "optimiser" in proc.stderr and str(bad) in proc.stderr and "optimizer" in proc.stderr
    assert "RayTrainWorker" not in proc.stdout + proc.stderr
    assert time.monotonic() - started < 60


def test_bad_launch_option_is_a_usage_error(tmp_path):
    proc = _launch_cli("--config", str(TINY), "--num-workers", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--num-workers must be >= 1" in proc.stderr


def test_dry_run_resolves_paths_and_starts_nothing(tmp_path, capsys):
    assert launch.main(["--config", str(TINY), "--dry-run", f"exp_dir={tmp_path}/exp"]) == 0
    out = capsys.readouterr().out
    assert "stages train infer measure" in out
    assert f"stats_dir: {tmp_path}/exp/stats" in out


def test_existing_run_is_refused_without_resume(tmp_path, capsys):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "run.json").write_text("{}")
    assert launch.main(["--config", str(TINY), "--dry-run", f"exp_dir={tmp_path}/exp"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert launch.main(["--config", str(TINY), "--dry-run", "--resume", f"exp_dir={tmp_path}/exp"]) == 0


def _tiny_run(tmp_path: Path, name: str, *extra: str) -> Path:
    exp = tmp_path / name
    data = tmp_path / "data"
    overrides = [
        f"exp_dir={exp}",
        f"data.train={data}/train",
        f"data.valid={data}/valid",
        f"data.test.test={data}/test",
    ]
    assert launch.main(["--config", str(TINY), "--num-gpus", "0", "--num-workers", "2", *overrides, *extra]) == 0
    return exp


def _steps_per_epoch(exp: Path, world_size: int = 2) -> int:
    """Batches per rank and epoch of a finished run, from the run's own data plan."""
    from omegaconf import OmegaConf

    from espnet3.config import load_config
    from espnet3.data.plan import build_data_plan

    cfg = OmegaConf.to_container(load_config(exp / "train.yaml"), resolve=True)
    return len(build_data_plan(cfg, splits=["train"]).dataloader("train", rank=0, world_size=world_size))


@pytest.mark.slow
def test_tiny_training_end_to_end_with_two_workers_and_resume(tmp_path, ray_cluster):
    wandb = "logging.wandb={project:espnet3-test,mode:offline}"
    # ESPnet2's iteration counter (GAN recipes keep the latest checkpoints by it) goes on after a resume.
    criteria = "best_model_criterion=[[valid/loss,2,min],[train/total_count,1,max]]"
    exp = _tiny_run(tmp_path, "e2e", wandb, criteria, "trainer.max_epochs=1", "--stages", "train")
    steps = _steps_per_epoch(exp)
    assert json.loads((exp / "train_result.json").read_text())["metrics"]["step"] == steps
    exp = _tiny_run(tmp_path, "e2e", wandb, criteria, "--resume")
    assert json.loads((exp / "train_result.json").read_text())["metrics"]["train/total_count"] == 2 * steps
    assert (exp / "train.total_count.ave_1best.pth").is_file()
    assert len(list(exp.glob("checkpoint_*/checkpoint.ckpt"))) == 2
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))
    assert list((exp / "wandb").glob("offline-run-*"))
    assert (exp / "train.yaml").is_file() and (exp / "config.yaml").is_file()
    run = json.loads((exp / "run.json").read_text())
    assert run["versions"]["ray"] and "espnet3.launch" in run["command"]
    assert (exp / "valid.loss.ave_2best.pth").is_file() and (exp / "last.pth").is_file()
    metrics = json.loads((exp / "infer" / "test" / "metrics.json").read_text())
    assert set(metrics) == {"cer", "wer"} and 0 <= metrics["cer"] and 0 <= metrics["wer"]
    for name in ("text", "token", "token_int", "score"):  # ESPnet2's 1best_recog files
        assert len((exp / "infer" / "test" / name).read_text().splitlines()) == 12
    result = json.loads((exp / "train_result.json").read_text())
    assert result["metrics"]["step"] == 2 * steps and result["metrics"]["epoch"] == 1


@pytest.mark.slow
def test_the_same_seed_on_the_same_machine_gives_the_same_model_and_scores(tmp_path, ray_cluster):
    """What README's reproducibility claim rests on: two runs of one config and seed, 2 DDP workers,
    train through measure, give bit-identical weights, validation metrics and hypotheses."""
    import torch

    runs = [_tiny_run(tmp_path, name, "trainer.max_epochs=1") for name in ("first", "second")]
    results = [json.loads((exp / "train_result.json").read_text())["metrics"] for exp in runs]
    assert results[0] == results[1] and "valid/loss" in results[0]
    for name in ("metrics.json", "token_int", "score"):
        assert (runs[0] / "infer" / "test" / name).read_text() == (runs[1] / "infer" / "test" / name).read_text()
    weights = [torch.load(exp / "last.pth", map_location="cpu") for exp in runs]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_ray_job_submit_against_a_running_cluster(tmp_path):
    """`ray start --head` on 127.0.0.1, then `ray job submit` of a tiny training, as a user would."""
    import os

    # Its own Ray directory (short: Ray's socket paths have a length limit): the pointer file `ray
    # start` writes there would otherwise make any launch on this machine join this cluster.
    ray_tmp = Path(f"/tmp/e3job{os.getpid()}")
    # Under a busy suite (the other xdist worker's clusters on the same 2 cores) the head's dashboard
    # agent has been slow to come up: give it time before its raylet gives up on it. `ray job
    # submit` obeys RAY_ADDRESS / RAY_API_SERVER_ADDRESS over `--address`: an in-process launch
    # earlier in this test process leaves them naming the suite's own cluster (whose job agent then
    # kept this submission waiting 300 s for "No available agent", 2026-12-03/04).
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", API_SERVER_ENV)}
    env.update(**token_auth(), RAY_TMPDIR=str(ray_tmp), RAY_agent_register_timeout_ms="300000")
    workdir = tmp_path / "recipe"
    workdir.mkdir()
    (workdir / "train.yaml").write_text(TINY.read_text())
    head, _, dashboard = start_head(env, "--num-cpus=4")
    try:
        exp = tmp_path / "exp"
        submit = [
            str(RAY_BIN), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", ".",
            "--", sys.executable, "-m", "espnet3.launch", "--config", "train.yaml", "--num-gpus", "0",
            f"exp_dir={exp}",
        ]
        deadline = time.monotonic() + 300
        while True:  # the dashboard's job API comes up a few seconds after the GCS
            proc = subprocess.run(submit, cwd=workdir, env=env, capture_output=True, text=True, timeout=400)
            if proc.returncode == 0 or time.monotonic() > deadline or "succeeded" in proc.stdout:
                break
            if head.poll() is not None:  # `ray start --block` ends when one of the head's processes died
                pytest.fail(f"the Ray head exited ({head.returncode}) before it took the job" + ray_logs_tail(ray_tmp))
            # Not up yet: the dashboard (refused), or the node's job agent (seen in CI under load).
            if not any(m in proc.stdout + proc.stderr for m in ("Connection refused", "Failed to connect",
                                                                 "No available agent")):
                break
            time.sleep(2)
        assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:] + ray_logs_tail(ray_tmp)
        assert f"http://127.0.0.1:{dashboard}" in proc.stdout  # this cluster's dashboard took it
        assert f"[espnet3] Ray dashboard: http://127.0.0.1:{dashboard}" in proc.stdout  # and the run says so
        assert "succeeded" in proc.stdout
        assert env["RAY_AUTH_TOKEN"] not in proc.stdout + proc.stderr
        assert (exp / "valid.loss.ave_2best.pth").is_file()
        assert set(json.loads((exp / "infer" / "test" / "metrics.json").read_text())) == {"cer", "wer"}
    finally:
        kill_node(head)  # the head's process group: every process this test started
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_dead_clusters_pointer_file_is_removed_and_not_joined(tmp_path, monkeypatch):
    import ray._private.utils

    from espnet3.orchestration.cluster import running_local_cluster

    pointer = tmp_path / "ray_current_cluster"
    pointer.write_text("10.9.9.9:1234")
    monkeypatch.setattr(ray._private.utils, "get_ray_address_file", lambda temp_dir=None: str(pointer))
    assert running_local_cluster() is None
    assert not pointer.exists()


def test_overrides_are_accepted_after_stages_and_between_options(tmp_path):
    spec = launch.parse_args(["--config", str(TINY), "--stages", "train", f"exp_dir={tmp_path}/x", "~data.digits",
                              "--num-gpus", "0", "seed=3", "--num-workers", "1", "+trainer.foo=1"])
    assert spec.stages == ["train"]
    assert spec.overrides == [f"exp_dir={tmp_path}/x", "~data.digits", "seed=3", "+trainer.foo=1"]
    assert spec.num_workers == 1


def test_an_unknown_stage_is_still_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        launch.parse_args(["--config", str(TINY), "--stages", "train", "evalute"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'evalute'" in capsys.readouterr().err
