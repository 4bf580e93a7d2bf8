"""Bad configs and data fail before Ray starts: exit code 2, one message naming the key or file and
the fix, no traceback.

Each case runs ``python -m espnet3.launch``'s ``main`` in this process with ``ray.init`` replaced
by a function that fails the test, so "no Ray worker started" is proven, not assumed; two cases
also run as real subprocesses with a private Ray temp dir that must stay empty.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from data_utils import TINY_ASR_MODEL, digit_utterances, write_datadir
from espnet3 import launch


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs_data")
    return {
        "train": write_datadir(root / "train", digit_utterances(8, seed=1, prefix="tr")),
        "valid": write_datadir(root / "valid", digit_utterances(4, seed=2, prefix="dv")),
    }


@pytest.fixture
def case(tmp_path, clean_data, monkeypatch):
    """A writable copy of the data and a config writer; returns (data dirs, run(config, *args))."""
    data = {split: Path(shutil.copytree(path, tmp_path / "data" / split)) for split, path in clean_data.items()}
    for split in data:  # wav.scp points into the copy
        scp = data[split] / "wav.scp"
        scp.write_text(scp.read_text().replace(str(clean_data[split]), str(data[split])))

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for an input that should have failed before")

    monkeypatch.setattr("ray.init", no_ray)

    def run(config: dict, *args: str, capsys=None) -> int:
        path = tmp_path / "train.yaml"
        path.write_text(yaml.safe_dump(config))
        return launch.main(["--config", str(path), "--num-gpus", "0", f"exp_dir={tmp_path}/exp", *args])

    return data, run


def base_config(data: dict) -> dict:
    return {
        "task": "asr1",
        "data": {"train": str(data["train"]), "valid": str(data["valid"])},
        "dataloader": {"batch_type": "numel", "batch_bins": 40000},
        "model": copy.deepcopy(TINY_ASR_MODEL),
        "trainer": {"max_epochs": 1},
        "best_model_criterion": [["valid/loss", 1, "min"]],
    }


def expect_usage_error(code: int, capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert re.search(fragment, err), f"{fragment!r} not in {err!r}"
    return err


# ------------------------------------------------------------------------------------------- config
CONFIG_CASES = {
    "unknown top-level key": (lambda c: c.update(optimiser={"_target_": "torch.optim.SGD"}),
                              [r"`optimiser`", r"did you mean `optimizer`"]),
    "max_epochs not a number": (lambda c: c["trainer"].update(max_epochs="ten"),
                                [r"`trainer.max_epochs`", r"'ten'", r"an integer or null"]),
    "trainer keyword typo": (lambda c: c["trainer"].update(max_epoch=3),
                             [r"`trainer.max_epoch`", r"did you mean `trainer.max_epochs`"]),
    "trainer precision typo": (lambda c: c["trainer"].update(precision="bf17"), [r"`trainer.precision`", "bf16-mixed"]),
    "trainer devices set by espnet3": (lambda c: c["trainer"].update(devices=2), [r"`trainer.devices`", "--num-gpus"]),
    "optimizer class typo": (lambda c: c.update(optimizer={"_target_": "torch.optim.Adma", "lr": 0.1}),
                             [r"`optimizer`", r"torch.optim.Adma", r"_target_"]),
    "negative learning rate": (lambda c: c.update(optimizer={"_target_": "torch.optim.Adam", "lr": -1}),
                               [r"`optimizer`", r"Invalid learning rate: -1"]),
    "unknown optimizer keyword": (lambda c: c.update(optimizer={"_target_": "torch.optim.Adam", "lrr": 0.1}),
                                  [r"`optimizer`", "lrr"]),
    "scheduler class typo": (lambda c: c.update(scheduler={"_target_": "espnet2.schedulers.warmup_lr.WarmupLRR"}),
                             [r"`scheduler`", "WarmupLRR"]),
    "scheduler without _target_": (lambda c: c.update(scheduler={"warmup_steps": 3}), [r"`scheduler._target_`"]),
    "max_nan_batches zero": (lambda c: c.update(max_nan_batches=0), [r"`max_nan_batches`", r"1 or more"]),
    "report_every_n_steps zero": (lambda c: c.update(report_every_n_steps=0), [r"`report_every_n_steps`"]),
    "max_failures below -1": (lambda c: c.update(max_failures=-2), [r"`max_failures`", r"-1 or more"]),
    "worker start timeout zero": (lambda c: c.update(timeouts={"worker_start_s": 0}), [r"`timeouts.worker_start_s`"]),
    "espnet2-style criterion": (lambda c: c.update(best_model_criterion=[["valid", "acc", "max"]]),
                                [r"best_model_criterion\[0\]", r"\[valid/acc, K, max\]"]),
    "criterion the model does not log": (lambda c: c.update(best_model_criterion=[["valid/si_snr", 1, "max"]]),
                                         [r"best_model_criterion\[0\]", r"ranks by valid/si_snr", r"valid/acc",
                                          r"train/total_count", r"best_model_criterion_missing: warn"]),
    "task name typo": (lambda c: c.update(task="asr11"), [r"`task`", r"did you mean `asr1`"]),
    "class choice typo": (lambda c: c["model"].update(encoder="transformerr"),
                          [r"`model.encoder`", r"Did you mean `transformer`"]),
    "unknown encoder keyword": (lambda c: c["model"]["encoder_conf"].update(output_sise=16),
                                [r"`model.encoder_conf`", "output_sise", "output_size"]),
    "unknown model key": (lambda c: c["model"].update(encodr="transformer"),
                          [r"`model.encodr`", r"Did you mean `model.encoder`"]),
    "preprocessing option in the model block": (lambda c: c["model"].update(cleaner="tacotron"),
                                                [r"`model.cleaner`", r"`preprocessor:` block"]),
    "preprocessor option typo": (lambda c: c.update(preprocessor={"cleanr": "tacotron"}),
                                 [r"`preprocessor.cleanr`", r"Did you mean `preprocessor.cleaner`"]),
    "model _target_ module missing": (lambda c: (c.pop("task"), c.update(model={"_target_": "nowhere.Model"})),
                                      [r"`model._target_`", "nowhere.Model", "cannot be imported"]),
    "multi-optimizer prefix typo": (
        lambda c: (c.update(optimizer=None, scheduler=None, optimizers={
            "enc": {"optimizer": {"_target_": "torch.optim.Adam"}, "params": ["encodr"]},
            "rest": {"optimizer": {"_target_": "torch.optim.Adam"}, "params": ["decoder", "ctc"]},
        })), [r"`optimizers", r"not selected by any `optimizers.<name>.params`: encoder\.", r"Add their name"]),
    "gpu option typo": (lambda c: c.update(gpu={"compiel": True}), [r"`gpu.compiel`", r"did you mean `gpu.compile`"]),
    "dataloader.gpu key typo": (lambda c: c["dataloader"].update(gpu={"batch_binz": 4}),
                                [r"`dataloader.gpu.batch_binz`", r"did you mean `dataloader.gpu.batch_bins`"]),
    "dataloader.gpu negative bins": (lambda c: c["dataloader"].update(gpu={"batch_bins": -4}),
                                     [r"in `dataloader.gpu`", r"`dataloader.batch_bins`"]),
    "inference option typo": (lambda c: c.update(inference={"beam_sise": 3}),
                              [r"`inference.beam_sise`", r"did you mean `inference.beam_size`"]),
    "inference beam of zero": (lambda c: c.update(inference={"beam_size": 0}),
                               [r"`inference.beam_size`", r"an integer >= 1, got 0"]),
    "inference ctc weight out of range": (lambda c: c.update(inference={"ctc_weight": 1.5}),
                                          [r"`inference.ctc_weight`", r"in \[0.0, 1.0\]"]),
    "inference decoder typo": (lambda c: c.update(inference={"decoder": "greedy"}),
                               [r"`inference.decoder`", "greedy_ctc"]),
    "metric without _target_": (lambda c: c.update(metrics=[{"name": "cer"}]), [r"`metrics`", r"_target_"]),
    "deleted required key": (None, [r"`seed`", r"drop the `~seed` override"]),
    "negative batch_bins": (lambda c: c["dataloader"].update(batch_bins=-5), [r"`dataloader.batch_bins`", ">= 1"]),
    "unknown batch type": (lambda c: c["dataloader"].update(batch_type="bucket"), [r"`dataloader.batch_type`", "numel"]),
    "token type typo": (lambda c: c["data"].update(token_type="wordpiece"), [r"`data.token_type`", "char"]),
    "unknown loader type": (lambda c: c["data"].update(train=[[c["data"]["train"] + "/wav.scp", "speech", "sond"]]),
                            [r"`data.train\[0\]`", r"did you mean `sound`"]),
}


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_bad_config_fails_before_ray_with_key_and_fix(name, case, capsys):
    data, run = case
    change, fragments = CONFIG_CASES[name]
    config = base_config(data)
    if change is not None:
        change(config)
    args = ["~seed"] if name == "deleted required key" else []
    err = expect_usage_error(run(config, *args), capsys, *fragments)
    assert "train.yaml" in err or "--num-gpus" in err


# --------------------------------------------------------------------------------------------- data
def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _break_wav_line(d):
    lines = _lines(d["train"] / "wav.scp")
    lines[1] = lines[1].split()[0] + "\n"
    (d["train"] / "wav.scp").write_text("".join(lines))


def _missing_audio(d):
    next((d["train"] / "wav").glob("*.wav")).unlink()


def _corrupt_audio(d):
    sorted((d["train"] / "wav").glob("*.wav"))[2].write_bytes(b"RIFF not really")


def _ids_differ(d):
    lines = _lines(d["valid"] / "text")
    (d["valid"] / "text").write_text("".join(lines[:-1]) + "zz_unknown ONE\n")


def _stereo(d):
    path = sorted((d["train"] / "wav").glob("*.wav"))[3]
    soundfile.write(str(path), np.zeros((800, 2), dtype=np.int16), 16000)


def _rates(d):
    path = sorted((d["train"] / "wav").glob("*.wav"))[3]
    soundfile.write(str(path), np.zeros(800, dtype=np.int16), 8000)


def _duplicate(d):
    with (d["train"] / "text").open("a") as f:
        f.write(_lines(d["train"] / "text")[0])


def _latin1_text(d):
    lines = (d["train"] / "text").read_text().splitlines()
    lines[2] = lines[2].split()[0] + " caf\xe9"
    (d["train"] / "text").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def _empty_audio(d):
    path = sorted((d["train"] / "wav").glob("*.wav"))[1]
    soundfile.write(str(path), np.zeros(0, dtype=np.int16), 16000)


def _missing_dir(d):
    shutil.rmtree(d["valid"])


DATA_CASES = {
    "line without a path": (_break_wav_line, [r"wav\.scp:2:", r"has no value"]),
    "text not in UTF-8": (_latin1_text, [r"train/text:3: not UTF-8", r"iconv"]),
    "missing audio file": (_missing_audio, [r"wav\.scp:\d+:", r"does not exist"]),
    "corrupt audio file": (_corrupt_audio, [r"wav\.scp:3:", r"cannot read audio file"]),
    "utterance ids differ between files": (_ids_differ, [r"valid/wav\.scp:4: utterance 'dv0003' has no line in \S*valid/text"]),
    "stereo among mono": (_stereo, [r"wav\.scp:4:", r"2 channel"]),
    "mixed sample rates": (_rates, [r"wav\.scp:4:", r"8000 Hz but line 1 is 16000 Hz"]),
    "duplicate utterance": (_duplicate, [r"text:9:", r"repeats line 1"]),
    "zero-length audio": (_empty_audio, [r"wav\.scp:2:", r"holds no samples"]),
    "missing data directory": (_missing_dir, [r"`data.valid`", r"does not exist"]),
}


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_bad_data_fails_before_ray_with_file_line_and_fix(name, case, capsys):
    data, run = case
    breaker, fragments = DATA_CASES[name]
    breaker(data)
    expect_usage_error(run(base_config(data)), capsys, *fragments)


def test_valid_split_without_text_names_the_data_and_the_key(case, capsys):
    data, run = case
    config = base_config(data)
    config["data"]["valid"] = [[str(data["valid"] / "wav.scp"), "speech", "sound"]]
    expect_usage_error(run(config), capsys, r"`data.valid` lacks the data text", r"add a triple")


def test_more_gpus_than_the_machine_has_is_refused_before_ray(case, capsys, monkeypatch):
    data, run = case
    import torch

    # As on a machine with no Ray cluster running: espnet3 would start one and wait for the GPUs.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("espnet3.orchestration.cluster.running_local_cluster", lambda: False)
    code = run(base_config(data), "--num-gpus", str(torch.cuda.device_count() + 1))
    expect_usage_error(code, capsys, r"`--num-gpus`", r"GPU\(s\)", r"--address")


# ------------------------------------------------------------------------------------ subprocesses
@pytest.mark.parametrize("breakage", ["config", "data"])
def test_the_cli_exits_2_without_traceback_or_ray_session(breakage, tmp_path, clean_data):
    data = {s: Path(shutil.copytree(p, tmp_path / s)) for s, p in clean_data.items()}
    for split in data:
        scp = data[split] / "wav.scp"
        scp.write_text(scp.read_text().replace(str(clean_data[split]), str(data[split])))
    config = base_config(data)
    if breakage == "config":
        config["trainer"]["max_epochs"] = "ten"
    else:
        _missing_audio(data)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    ray_tmp = tmp_path / "ray_tmp"
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "espnet3.launch", "--config", str(path), "--num-gpus", "0", f"exp_dir={tmp_path}/exp"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "espnet3.launch: error:" in proc.stderr
    assert not ray_tmp.exists() or not any(ray_tmp.rglob("session_*")), "a Ray session was started"
