"""An egs3 recipe, in upstream ESPnet3's layout and with upstream's run.py, on Ray Train workers.

The recipe is this project's own (recipes/digits/esp2_asr: synthetic digits, its builder
synthesises instead of downloading), copied out as a user would, and run through every stage.
Bad inputs stop before Ray (``ray.init`` is replaced by a failure) with exit code 2 and a message
naming the key, the file and the fix.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from espnet3.systems.esp2_asr.system import ASRSystem
from espnet3.systems import launch
from paths import FIXTURES, REPO

RECIPE = REPO / "recipes" / "digits" / "esp2_asr"
GAN_TTS = FIXTURES / "egs3_gan_tts"
ROLES = ("--training_config", "conf/training.yaml", "--inference_config", "conf/inference.yaml",
         "--metrics_config", "conf/metrics.yaml")


def copy_recipe(tmp_path: Path) -> Path:
    return Path(shutil.copytree(RECIPE, tmp_path / "digits_esp2_asr", ignore=shutil.ignore_patterns("data", "exp")))


@pytest.fixture
def no_ray(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("Ray was started for an input that should have failed before")

    monkeypatch.setattr("ray.init", fail)


def run_here(recipe: Path, monkeypatch, *argv: str) -> int:
    monkeypatch.chdir(recipe)
    monkeypatch.syspath_prepend(str(recipe))
    return launch.run(ASRSystem, list(argv))


def exit_code(recipe: Path, monkeypatch, *argv: str) -> int:
    """run.py's exit code (argparse's usage errors exit by themselves)."""
    try:
        return run_here(recipe, monkeypatch, *argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_recipe_runs_every_stage_with_its_own_run_py_on_two_ray_workers(tmp_path):
    recipe = copy_recipe(tmp_path)
    _edit(recipe, "inference", lambda c: c.update(output_keys=["text", "token"]))  # upstream's: only these .scp
    result = subprocess.run([sys.executable, "run.py", "--stages", "all", *ROLES], cwd=recipe,
                            capture_output=True, text=True, timeout=840)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    # create_dataset synthesised the corpus; train_tokenizer wrote ESPnet2's token list and bpe model
    assert (recipe / "data" / "digits" / "test" / "text").is_file()
    tokens = (recipe / "data" / "bpe_30" / "tokens.txt").read_text().split()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert (recipe / "data" / "bpe_30" / "bpe.model").is_file()
    # the train.yaml the role configs amount to, runnable by espnet3.launch itself
    converted = yaml.safe_load((recipe / "training.espnet3.yaml").read_text())
    assert converted["task"] == "espnet3.systems.esp2_asr.task.ASRTask" and "vocab_size" not in converted["model"]
    assert converted["optimizer"] == {"_target_": "torch.optim.Adam", "lr": 0.002, "weight_decay": 1e-06}
    exp = recipe / "exp" / "training"
    attempts = [json.loads(p.read_text()) for p in (exp / "attempts").glob("attempt-*.json")]
    assert [a["world_size"] for a in attempts] == [2], "num_device: 2 -> two Ray Train workers"
    # train -> infer -> measure: every test utterance decoded and scored
    hyps = (exp / "infer" / "test" / "text").read_text().splitlines()
    assert len(hyps) == 12
    scores = json.loads((exp / "infer" / "test" / "metrics.json").read_text())
    assert set(scores) >= {"wer", "cer"} and all(0 <= scores[k] <= 2 for k in ("wer", "cer"))
    # and where upstream's runner writes them: ${inference_dir}/<test>/<field>.scp, ${inference_dir}/metrics.json
    inference_dir = exp / "inference"  # inference.yaml's stem (upstream's ${self_name:})
    assert (inference_dir / "test" / "text.scp").read_text().splitlines() == hyps
    assert sorted(p.name for p in (inference_dir / "test").iterdir()) == ["text.scp", "token.scp"]
    assert json.loads((inference_dir / "metrics.json").read_text()) == {
        "espnet3.systems.esp2_asr.metrics.wer.WER": {"test": {"WER": round(100 * scores["wer"], 2)}},
        "espnet3.systems.esp2_asr.metrics.cer.CER": {"test": {"CER": round(100 * scores["cer"], 2)}},
    }
    # upstream's checkpoint names: each kept checkpoint and the latest, as ESPnet2 inference loads them
    kept = sorted(exp.glob("epoch*_step*_valid.loss.ckpt"))
    assert [p.name for p in kept] == ["epoch0_step4_valid.loss.ckpt", "epoch1_step8_valid.loss.ckpt"]
    averaged = torch.load(exp / "valid.loss.ave_2best.pth")
    for path in (*kept, exp / "last.ckpt"):
        assert torch.load(path).keys() == averaged.keys()  # ESPnet2's parameter names, no Lightning prefix
    # `all` skips what needs the network or a config not given, and says so
    assert "skipping pack_model (no --publication_config); upload_model (needs the network)" in out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_releases_mini_an4_recipe_runs_unchanged_through_measure(tmp_path):
    """espnet 202611's own egs3/mini_an4/esp2_asr, copied out of the wheel as a user would: its
    builder (AN4 SPHERE files through `sph2pipe`), tokenizer, transformer config and inference.yaml,
    which decodes `${exp_dir}/epoch0_step1_valid.loss.ckpt`."""
    from importlib.resources import files

    source = Path(str(files("egs3.mini_an4.esp2_asr")))
    recipe = Path(shutil.copytree(source, tmp_path / "esp2_asr", ignore=shutil.ignore_patterns("__pycache__")))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # sph2pipe
    result = subprocess.run([sys.executable, "run.py", "--stages", "create_dataset", "train_tokenizer", "collect_stats",
                             "train", "infer", "measure", "--training_config", "conf/training_asr_transformer.yaml",
                             "--inference_config", "conf/inference.yaml", "--metrics_config", "conf/metrics.yaml"],
                            cwd=recipe, env=env, capture_output=True, text=True, timeout=840)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    exp = recipe / "exp" / "training_asr_transformer"
    assert f"Scores of {exp / 'epoch0_step1_valid.loss.ckpt'}" in out  # the checkpoint inference.yaml names
    for test_set, utterances in (("test", 2), ("valid_test", 1)):  # its test set `valid` decodes as valid_test
        assert len((exp / "infer" / test_set / "text").read_text().splitlines()) == utterances
        assert set(json.loads((exp / "infer" / test_set / "metrics.json").read_text())) == {"wer", "cer"}
    # upstream's layout keeps the inference config's own names: valid, not valid_test
    for test_set, utterances in (("test", 2), ("valid", 1)):
        assert len((exp / "inference" / test_set / "text.scp").read_text().splitlines()) == utterances
    upstream_scores = json.loads((exp / "inference" / "metrics.json").read_text())
    assert set(upstream_scores["espnet3.systems.esp2_asr.metrics.wer.WER"]) == {"test", "valid"}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_releases_mini_an4_default_transducer_config_trains_and_decodes(tmp_path):
    """mini_an4's default conf/training.yaml is a transducer (ESPnet2's asr_transducer task), whose
    loss ESPnet2 imports from warp-transducer, which is not on PyPI: torchaudio's loss stands in
    (espnet3.utils.warprnnt), and conf/inference_transducer.yaml decodes with ESPnet2's transducer
    Speech2Text the `${exp_dir}/last.ckpt` it names."""
    from importlib.resources import files

    source = Path(str(files("egs3.mini_an4.esp2_asr")))
    recipe = Path(shutil.copytree(source, tmp_path / "esp2_asr", ignore=shutil.ignore_patterns("__pycache__")))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # sph2pipe
    result = subprocess.run([sys.executable, "run.py", "--stages", "all", "--training_config", "conf/training.yaml",
                             "--inference_config", "conf/inference_transducer.yaml",
                             "--metrics_config", "conf/metrics.yaml"],
                            cwd=recipe, env=env, capture_output=True, text=True, timeout=840)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    exp = recipe / "exp" / "training"
    assert "loss_transducer" in out  # the transducer model's own loss, logged for validation
    assert f"Scores of {exp / 'last.ckpt'}" in out
    for test_set, utterances in (("test", 2), ("valid", 1)):
        assert len((exp / "inference_transducer" / test_set / "text.scp").read_text().splitlines()) == utterances
    scores = json.loads((exp / "inference_transducer" / "metrics.json").read_text())
    assert set(scores["espnet3.systems.esp2_asr.metrics.cer.CER"]) == {"test", "valid"}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_gan_tts_recipe_trains_its_named_optimizers_on_two_workers(tmp_path):
    """A non-ASR recipe: ESPnet2's gan_tts task through BaseSystem, `optimizers.<name>.params:
    generator` selecting `tts.generator.*` as upstream's does."""
    recipe = Path(shutil.copytree(GAN_TTS, tmp_path / "gan_tts"))
    result = subprocess.run([sys.executable, "run.py", "--stages", "create_dataset", "train",
                             "--training_config", "conf/training.yaml"], cwd=recipe, capture_output=True, text=True,
                            timeout=840)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    exp = recipe / "exp" / "training"
    metrics = json.loads((exp / "train_result.json").read_text())["metrics"]
    for turn in ("generator", "discriminator"):
        assert math.isfinite(metrics[f"train/{turn}/loss"]), metrics
    attempts = [json.loads(p.read_text()) for p in (exp / "attempts").glob("attempt-*.json")]
    assert [a["world_size"] for a in attempts] == [2]
    (best,) = exp.glob("epoch0_step*_valid.generator_mel_loss.ckpt")  # upstream's checkpoint name
    assert (exp / "last.ckpt").is_file() and best.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_espnet3_launch_takes_the_recipes_training_config_so_a_sweep_runs_over_it(tmp_path):
    """`python -m espnet3.launch --sweep` with `base: conf/training.yaml`: the recipe's config, merged
    over its TEMPLATE and translated as run.py does, is each trial's train.yaml."""
    recipe = copy_recipe(tmp_path)
    prepared = subprocess.run([sys.executable, "run.py", "--stages", "create_dataset", "train_tokenizer", *ROLES[:2]],
                              cwd=recipe, capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    (recipe / "sweep.yaml").write_text(yaml.safe_dump({
        "base": "conf/training.yaml", "overrides": ["trainer.max_epochs=1"], "output_dir": "sweeps/lr",
        "space": {"optimizer.lr": {"grid": [0.002, 0.004]}}, "metric": "valid/loss", "mode": "min",
        "num_samples": 1, "max_concurrent_trials": 2, "workers_per_trial": 1, "cpus_per_worker": 1,
    }))
    result = subprocess.run([sys.executable, "-m", "espnet3.launch", "--sweep", "sweep.yaml", "--num-gpus", "0"],
                            cwd=recipe, capture_output=True, text=True, timeout=840)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    with open(recipe / "sweeps" / "lr" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(float(r["optimizer.lr"]) for r in rows) == [0.002, 0.004]
    assert all(r["status"] == "TERMINATED" and int(r["iterations"]) == 1 for r in rows), rows
    for trial in (recipe / "sweeps" / "lr" / "trials").glob("*/train.yaml"):  # the recipe's, per trial
        assert yaml.safe_load(trial.read_text())["data"]["train"]["_target_"].endswith("RecipeSplit")


def test_dry_run_prints_the_plan_and_the_train_yaml_and_runs_nothing(tmp_path, monkeypatch, capsys, no_ray):
    recipe = copy_recipe(tmp_path)
    assert run_here(recipe, monkeypatch, "--stages", "train", "--dry_run", *ROLES[:2]) == 0
    out = capsys.readouterr().out
    assert "python -m espnet3.launch --config" in out and "--num-workers 2" in out
    assert "lr: 0.002" in out and "warmup_steps: 10" in out  # the recipe's values over the TEMPLATE's
    assert not (recipe / "data").exists() and not (recipe / "exp").exists()


def test_per_split_preprocessors_merge_over_the_shared_keys_and_each_split_gets_its_own(tmp_path, monkeypatch, capsys,
                                                                                      no_ray):
    """Upstream's `dataset.preprocessor: {shared keys, train: {...}, valid: {...}}` (mini_an4's
    split_preprocessor config): train prepares the training split, valid the others."""
    import numpy as np

    from espnet3.utils.instantiate import instantiate

    recipe = copy_recipe(tmp_path)
    _edit(recipe, "training", lambda c: c["dataset"].update(preprocessor={
        "gain": 2.0, "train": {"_target_": "toy_datasets.Louder"},
        "valid": {"_target_": "toy_datasets.Louder", "gain": 0.5}}))
    assert run_here(recipe, monkeypatch, "--stages", "train", "--dry_run", *ROLES[:2]) == 0
    out = capsys.readouterr().out
    converted = yaml.safe_load(out[out.index("name: training"):])
    block = converted["preprocessor"]
    assert block["train_preprocessor"] == {"_target_": "toy_datasets.Louder", "gain": 2.0}
    assert block["eval_preprocessor"] == {"_target_": "toy_datasets.Louder", "gain": 0.5}
    item = {"speech": np.ones(4, dtype=np.float32)}
    for train, gain in ((True, 2.0), (False, 0.5)):
        preprocess = instantiate(block, train=train)
        assert preprocess.delegate.train is train
        np.testing.assert_allclose(preprocess("utt", dict(item))["speech"], gain)


def _edit(recipe: Path, role: str, edit) -> None:
    path = recipe / "conf" / f"{role}.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))


@pytest.mark.parametrize("argv, edit, expected", [
    (("--stages", "unknown_stage"), None, "invalid choice: 'unknown_stage'"),
    (("--stages", "infer", "--training_config", "conf/training.yaml"), None,
     "stage `infer` reads the inference config, which was not given: pass --inference_config"),
    (("--stages", "train"), None, "stage `train` reads the training config, which was not given"),
    (("--stages", "train", "--training_config", "conf/training.yaml"),
     ("training", lambda c: c.update(num_devices=2)),
     "conf/training.yaml: `num_devices`: not a key of an egs3 training config"),
    (("--stages", "train", "--training_config", "conf/training.yaml"),
     ("training", lambda c: c["dataset"]["train"][0].update(data_src="no_such/corpus")),
     "conf/training.yaml: `dataset.train[0].data_src`: data_src 'no_such/corpus' does not load"),
    (("--stages", "upload_model"), None, "stage `upload_model` needs the network"),
    (("--stages", "infer", "--inference_config", "conf/inference.yaml"), None,
     "stage `infer` reads the training config, which was not given: pass --training_config"),
    (("--stages", "infer", "--training_config", "conf/training.yaml", "--inference_config", "conf/inference.yaml"),
     ("inference", lambda c: c["model"].update(_target_="espnet2.bin.asr_transducer_inference.Speech2Text")),
     "conf/inference.yaml: `model._target_`: espnet2.bin.asr_transducer_inference.Speech2Text cannot load the "
     "models of the training config's task"),
    (("--stages", "infer", "--training_config", "conf/training.yaml", "--inference_config", "conf/inference.yaml"),
     ("inference", lambda c: c.update(output_keys=["text", "hyp"])),
     "conf/inference.yaml: `output_keys`: 'hyp' is not an output of espnet2.bin.asr_inference.Speech2Text. "
     "Fix: use some of text, token, token_int, score"),
    (("--stages", "infer", "--training_config", "conf/training.yaml", "--inference_config", "conf/inference.yaml"),
     ("inference", lambda c: c.update(input_key=["speech", "text"])),
     "conf/inference.yaml: `input_key`: espnet2.bin.asr_inference.Speech2Text decodes the dataset field 'speech'"),
    (("--stages", "infer", "--training_config", "conf/training.yaml", "--inference_config", "conf/inference.yaml"),
     ("inference", lambda c: c.update(output_fn="src.outputs.to_hyp")),
     "conf/inference.yaml: `output_fn`: upstream's legacy output hook is not run here"),
], ids=["unknown-stage", "missing-role-config", "missing-training-config", "unknown-key", "bad-data-src",
        "online-stage", "infer-without-training-config", "inference-class-of-another-family", "unknown-output-key",
        "input-key-the-decoder-does-not-read", "output-fn"])
def test_bad_inputs_stop_before_ray_with_the_key_the_file_and_the_fix(tmp_path, monkeypatch, capsys, no_ray,
                                                                     argv, edit, expected):
    recipe = copy_recipe(tmp_path)
    if edit is not None:
        _edit(recipe, *edit)
    assert exit_code(recipe, monkeypatch, *argv) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not (recipe / "exp").exists()
