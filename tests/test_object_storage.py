"""A run directory in object storage (``exp_dir=s3://...``) against a real S3-compatible server.

The server is moto's, started on 127.0.0.1 by the ``s3_server`` fixture; what lands in the bucket
is read back with boto3, not through :mod:`espnet3.storage`, so the layer does not grade itself.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

import s3_local
from espnet3 import launch, storage

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny_asr.yaml"


# -- the storage layer -------------------------------------------------------------------------


def test_local_copies_are_written_through_to_the_bucket_and_pulled_back(s3_bucket, s3_server):
    run = f"s3://{s3_bucket}/exp/run"
    local = storage.local_copy(run)
    assert local.is_relative_to(storage.cache_root()) and storage.uri_of(local) == run
    storage.atomic_write(local / "a" / "tokens.txt", "<blank>\n<unk>\n")
    storage.atomic_write_json(local / "train_result.json", {"step": 3})
    assert sorted(s3_local.objects(s3_server, s3_bucket)) == [
        "exp/run/a/tokens.txt", "exp/run/train_result.json"]
    assert storage.listdir(run) == ["a", "train_result.json"]
    assert storage.read_text(f"{run}/a/tokens.txt") == "<blank>\n<unk>\n"
    shutil.rmtree(local)  # another machine: nothing local
    storage.pull_tree(local, skip=lambda relative: relative.startswith("a/"))
    assert json.loads((local / "train_result.json").read_text()) == {"step": 3}
    assert not (local / "a").exists()
    storage.delete(f"{run}/a")
    assert storage.listdir(run) == ["train_result.json"]
    # A plain path is not a local copy: nothing is uploaded.
    assert storage.uri_of(Path("/tmp/x")) is None and storage.home("/tmp/x") == "/tmp/x"


def test_a_failed_write_leaves_neither_a_local_file_nor_an_object(s3_bucket, s3_server):
    local = storage.local_copy(f"s3://{s3_bucket}/exp/run") / "model.pth"

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(b"PK" * 1000)
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        storage.atomic_save(local, half_then_crash)
    assert not local.exists() and list(local.parent.iterdir()) == []
    assert s3_local.objects(s3_server, s3_bucket) == []


def test_logs_are_uploaded_while_the_block_runs_and_after_it_fails(s3_bucket, s3_server):
    import time

    log = storage.local_copy(f"s3://{s3_bucket}/exp/run") / "logs" / "rank0.log"
    log.parent.mkdir(parents=True)
    log.write_text("first\n")
    key = "exp/run/logs/rank0.log"
    with pytest.raises(ValueError), storage.uploading([log], every_s=0.2):
        deadline = time.monotonic() + 20
        while key not in s3_local.objects(s3_server, s3_bucket) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert key in s3_local.objects(s3_server, s3_bucket)  # uploaded while running
        log.write_text("first\nTraceback: the crash\n")
        raise ValueError("the training function failed")
    assert storage.read_text(f"s3://{s3_bucket}/{key}").endswith("the crash\n")  # and after the crash


def test_checkpoints_in_a_bucket_are_pruned_by_every_criterion(s3_bucket, s3_server):
    from espnet3.orchestration.criteria import BestCriterion
    from espnet3.orchestration.pruning import prune, read_reports

    run = f"s3://{s3_bucket}/exp/run"
    losses = [3.0, 1.0, 2.0, 0.5]
    for i, loss in enumerate(losses):
        base = storage.local_copy(run) / f"checkpoint_2026-01-01_00-00-0{i}.000000"
        storage.atomic_write(base / "checkpoint.ckpt", b"weights")
        storage.atomic_write_json(base / "metrics.json", {"valid/loss": loss, "step": i})
    shutil.rmtree(storage.local_copy(run))  # the controller may run on a node without the copies
    assert [r.metrics["valid/loss"] for r in read_reports(run)] == losses
    pruned = prune(run, [BestCriterion("valid/loss", 2, "min")])
    assert len(pruned) == 2 and all(p.startswith(run) for p in pruned)
    kept = sorted(k.split("/")[2] for k in s3_local.objects(s3_server, s3_bucket) if k.endswith(".ckpt"))
    assert [read_reports(run)[i].name for i in (1, 3)] == kept
    assert len([k for k in s3_local.objects(s3_server, s3_bucket) if k.endswith("metrics.json")]) == 4


# -- bad inputs: exit 2 before Ray, naming the key, the URI and the fix --------------------------


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for an input that should have failed before")

    monkeypatch.setattr("ray.init", refuse)


def _launch(tmp_path: Path, *overrides: str) -> int:
    data = tmp_path / "data"
    return launch.main(["--config", str(TINY), "--num-gpus", "0", f"data.train={data}/train",
                        f"data.valid={data}/valid", f"data.test.test={data}/test", *overrides])


@pytest.mark.parametrize("case", ["missing bucket", "unreachable endpoint", "missing credentials", "data URI"])
def test_storage_problems_are_configuration_errors_before_ray(case, s3_bucket, tmp_path, monkeypatch, capsys, no_ray):
    overrides = [f"exp_dir=s3://{s3_bucket}/exp/tiny"]
    expected = [f"s3://{s3_bucket}/exp/tiny", "`exp_dir`"]
    if case == "missing bucket":
        overrides = ["exp_dir=s3://no-such-bucket-espnet3/exp/tiny"]
        expected = ["`exp_dir`", "s3://no-such-bucket-espnet3", "does not exist", "create it"]
    elif case == "unreachable endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        expected += ["AWS_ENDPOINT_URL", "reachable"]
    elif case == "missing credentials":
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(key)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws either
        expected += ["AWS_ACCESS_KEY_ID", "credentials"]
    else:
        overrides = [f"exp_dir={tmp_path}/exp", f"data.valid=s3://{s3_bucket}/data/valid"]
        expected = ["`data.valid`", "object storage", "local or shared-filesystem path"]
    assert _launch(tmp_path, *overrides) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)
    assert not Path("s3:").exists() and not (tmp_path / "s3:").exists()


# -- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_run_lives_in_the_bucket_train_resume_evaluate_pack(s3_bucket, s3_server, tmp_path, ray_cluster,
                                                             monkeypatch):
    """Train one epoch, lose every local copy (a new machine), ``--resume`` for the second epoch
    with evaluation, lose the copies again, then ``--stages infer measure pack`` from the bucket."""
    monkeypatch.chdir(tmp_path)
    run = f"s3://{s3_bucket}/exp/tiny"
    cache = storage.cache_root()
    assert _launch(tmp_path, f"exp_dir={run}", "trainer.max_epochs=1", "--stages", "train") == 0
    shutil.rmtree(cache)
    assert _launch(tmp_path, f"exp_dir={run}", "--resume") == 0
    keys = set(s3_local.objects(s3_server, s3_bucket, "exp/tiny/"))
    names = {key[len("exp/tiny/"):] for key in keys}
    for name in ("train.yaml", "run.json", "tokens.txt", "config.yaml", "train_result.json", "last.pth",
                 "valid.loss.ave_2best.pth", "stats/train/speech_shape", "stats/valid/text_shape",
                 "infer/test/text", "infer/test/metrics.json", "logs/rank0.log", "logs/rank1.log"):
        assert name in names, (name, sorted(names))
    assert any(n.startswith("tensorboard/events.out.tfevents.") for n in names)
    assert len([n for n in names if n.startswith("checkpoint_") and n.endswith("/checkpoint.ckpt")]) == 2
    result = json.loads(storage.read_text(f"{run}/train_result.json"))
    assert result["metrics"]["epoch"] == 1  # the second epoch ran, from the first one's checkpoint
    assert result["averaged_model"] == f"{run}/valid.loss.ave_2best.pth" and result["last_model"] == f"{run}/last.pth"
    assert all(c["path"].startswith(f"{run}/checkpoint_") for c in result["criteria"][0]["checkpoints"])
    saved = yaml.safe_load(storage.read_text(f"{run}/train.yaml"))
    assert saved["exp_dir"] == run and saved["data"]["token_list"] == f"{run}/tokens.txt"
    run_record = json.loads(storage.read_text(f"{run}/run.json"))
    assert len(run_record["previous_launches"]) == 1  # the first launch, read back from the bucket
    scores = json.loads(storage.read_text(f"{run}/infer/test/metrics.json"))

    shutil.rmtree(cache)
    assert _launch(tmp_path, f"exp_dir={run}", "--stages", "infer", "measure", "pack") == 0
    assert json.loads(storage.read_text(f"{run}/infer/test/metrics.json")) == scores
    assert "exp/tiny/packed/tiny_asr.zip" in s3_local.objects(s3_server, s3_bucket, "exp/tiny/packed/")
    # Nothing was written to a local path made from the URI.
    assert not any(p.name.startswith("s3:") for p in tmp_path.rglob("*"))
    assert not Path(REPO, "s3:").exists()
