"""A run directory in object storage (``exp_dir=s3://...``) against a real S3-compatible server.

The server is moto's, started on 127.0.0.1 by the ``s3_server`` fixture; what lands in the bucket
is read back with boto3, not through :mod:`espnet3.storage`, so the layer does not grade itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

import s3_local
from espnet3 import launch, storage
from paths import REPO, TINY



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


def _bucket_data(corpus_uri: str) -> list[str]:
    return ["~data.digits", f"data.train={corpus_uri}/train", f"data.valid={corpus_uri}/valid",
            f"data.test.test={corpus_uri}/test"]


def test_a_dump_directory_in_the_bucket_is_read_item_by_item(s3_bucket, s3_server, digits):
    """List files come once per node with their URIs pointing at local copies; an item's audio is
    fetched when the item is first read, and only then."""
    from espnet3.data import remote
    from espnet3.data.dataset import build_dataset, dataset_keys
    from espnet3.data.sources import SplitSource

    uri = s3_local.upload_corpus(s3_server, s3_bucket, digits, "dump/raw")
    local = remote.fetch_directory(storage.local_copy(f"{uri}/valid"))
    assert sorted(p.name for p in local.iterdir()) == ["spk2info", "spk2utt", "text", "utt2spk", "wav.scp"]
    first = (local / "wav.scp").read_text().splitlines()[0].split()
    assert Path(first[1]) == storage.local_copy(f"{uri}/valid/wav/{first[0]}.wav")
    assert (local / "text").read_text() == (digits / "valid" / "text").read_text()  # transcripts untouched
    dataset = build_dataset(SplitSource.parse("data.valid", [[str(local / "wav.scp"), "speech", "sound"]]), None)
    assert len(dataset_keys(dataset)) == 12 and not (local / "wav").exists()  # no audio fetched yet
    utt, item = dataset[first[0]]
    import soundfile

    expected, _ = soundfile.read(digits / "valid" / "wav" / f"{first[0]}.wav", dtype="float32")
    assert utt == first[0] and (item["speech"] == expected).all()
    assert [p.name for p in (local / "wav").iterdir()] == [f"{first[0]}.wav"]  # that one item only
    s3_local.delete_object(s3_server, s3_bucket, f"dump/raw/valid/wav/{first[0]}.wav")  # cached: still read
    assert dataset[first[0]][0] == first[0]
    second = (local / "wav.scp").read_text().splitlines()[1].split()[0]
    s3_local.delete_object(s3_server, s3_bucket, f"dump/raw/valid/wav/{second}.wav")
    with pytest.raises(FileNotFoundError, match=f"{uri}/valid/wav/{second}.wav does not exist"):
        dataset[second]


@pytest.mark.parametrize("case", ["missing bucket", "unreachable endpoint", "missing credentials", "missing data",
                                  "missing audio", "generated corpus"])
def test_storage_problems_are_configuration_errors_before_ray(case, s3_bucket, s3_server, digits, tmp_path,
                                                              monkeypatch, capsys, no_ray):
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
    elif case == "missing data":
        overrides = [f"exp_dir={tmp_path}/exp", f"data.valid=s3://{s3_bucket}/data/valid"]
        expected = ["`data.valid`", f"s3://{s3_bucket}/data/valid does not exist", "upload the data"]
    elif case == "missing audio":
        uri = s3_local.upload_corpus(s3_server, s3_bucket, digits, "dump")
        line, utt = next((i, l.split()[0]) for i, l in enumerate(
            (digits / "valid" / "wav.scp").read_text().splitlines(), 1) if i == 5)
        s3_local.delete_object(s3_server, s3_bucket, f"dump/valid/wav/{utt}.wav")
        overrides = [f"exp_dir={tmp_path}/exp", *_bucket_data(uri)]
        expected = [f"{uri}/valid/wav.scp:{line}", f"{uri}/valid/wav/{utt}.wav does not exist", "upload it"]
    else:
        overrides = [f"exp_dir={tmp_path}/exp", f"data.train=s3://{s3_bucket}/data/train"]
        expected = ["`data.train`", "generated corpus", "local or shared-filesystem path"]
    assert _launch(tmp_path, *overrides) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)
    assert not Path("s3:").exists() and not (tmp_path / "s3:").exists()


# -- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_run_lives_in_the_bucket_train_resume_evaluate_pack(s3_bucket, s3_server, digits, tmp_path,
                                                             ray_cluster, monkeypatch):
    """With the corpus in the bucket too: train one epoch, lose every local copy (a new machine),
    ``--resume`` for the second epoch with evaluation, lose the copies again, then
    ``--stages infer measure pack`` from the bucket. The training split is sharded
    (``espnet3.data.shard``, bucket to bucket), valid and test are dump directories: both forms."""
    from espnet3.data.shard import convert

    monkeypatch.chdir(tmp_path)
    run = f"s3://{s3_bucket}/exp/tiny"
    corpus = s3_local.upload_corpus(s3_server, s3_bucket, digits, "dump/raw")
    convert(f"{corpus}/train", f"s3://{s3_bucket}/shards/train", utterances_per_shard=16)
    assert sorted(k for k in s3_local.objects(s3_server, s3_bucket, "shards/train/") if k.endswith(".tar")) == [
        f"shards/train/shard-00000{i}.tar" for i in range(4)]
    data = [*_bucket_data(corpus), f"data.train=s3://{s3_bucket}/shards/train"]
    cache = storage.cache_root()
    assert _launch(tmp_path, f"exp_dir={run}", *data, "trainer.max_epochs=1", "--stages", "train") == 0
    shutil.rmtree(cache)
    assert _launch(tmp_path, f"exp_dir={run}", *data, "--resume") == 0
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

    assert saved["data"]["train"] == f"s3://{s3_bucket}/shards/train"
    assert not list(cache.rglob("*.tar"))  # shards are streamed, never copied
    shutil.rmtree(cache)
    assert _launch(tmp_path, f"exp_dir={run}", *data, "--stages", "infer", "measure", "pack") == 0
    assert json.loads(storage.read_text(f"{run}/infer/test/metrics.json")) == scores
    assert "exp/tiny/packed/tiny_asr.zip" in s3_local.objects(s3_server, s3_bucket, "exp/tiny/packed/")
    # Nothing was written to a local path made from the URI.
    assert not any(p.name.startswith("s3:") for p in tmp_path.rglob("*"))
    assert not Path(REPO, "s3:").exists()
    assert not (tmp_path / "data").exists()  # and the corpus came from the bucket only


def _bucket_sweep(tmp_path: Path, output_dir: str) -> Path:
    sweep = yaml.safe_load((REPO / "configs" / "sweep_tiny.yaml").read_text())
    sweep.update(base=str(TINY), output_dir=output_dir, num_samples=1, max_concurrent_trials=1, scheduler=None,
                 space={"optimizer.lr": {"choice": [0.002]}}, overrides=["trainer.max_epochs=1"])
    path = tmp_path / "bucket_sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_a_sweep_in_a_missing_bucket_is_refused_before_ray(s3_bucket, tmp_path, capsys, no_ray):
    path = _bucket_sweep(tmp_path, "s3://no-such-bucket-espnet3/sweeps/tiny")
    assert launch.main(["--sweep", str(path), "--num-gpus", "0", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "`output_dir`" in err and "s3://no-such-bucket-espnet3" in err and "does not exist" in err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_sweep_lives_in_the_bucket_and_resumes_from_it(s3_bucket, s3_server, digits, tmp_path, ray_cluster,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = f"s3://{s3_bucket}/sweeps/tiny"
    path = _bucket_sweep(tmp_path, out)
    data = _bucket_data(s3_local.upload_corpus(s3_server, s3_bucket, digits, "dump/raw"))
    assert launch.main(["--sweep", str(path), "--num-gpus", "0", *data]) == 0
    names = {k[len("sweeps/tiny/"):] for k in s3_local.objects(s3_server, s3_bucket, "sweeps/tiny/")}
    for name in ("results.csv", "best.yaml", "metric.png", "shared/tokens.txt", "shared/stats/train/speech_shape"):
        assert name in names, (name, sorted(names))
    assert any(n.startswith("experiment_state") or n == "tuner.pkl" for n in names), sorted(names)  # Tune's state
    trial_files = [n for n in names if n.startswith("trials/") and n.endswith("/train.yaml")]
    assert len(trial_files) == 1
    assert any(n.startswith("trials/") and n.endswith("/checkpoint.ckpt") for n in names)
    results = storage.read_text(f"{out}/results.csv")
    assert "TERMINATED" in results

    shutil.rmtree(storage.cache_root())  # another machine: the sweep is only in the bucket
    assert launch.main(["--sweep", str(path), "--num-gpus", "0", *data, "--resume"]) == 0
    again = {k[len("sweeps/tiny/"):] for k in s3_local.objects(s3_server, s3_bucket, "sweeps/tiny/")}
    assert [n for n in again if n.startswith("trials/") and n.endswith("/train.yaml")] == trial_files
    assert storage.read_text(f"{out}/results.csv") == results  # the finished trial was not repeated
    assert not any(p.name.startswith("s3:") for p in tmp_path.rglob("*"))
