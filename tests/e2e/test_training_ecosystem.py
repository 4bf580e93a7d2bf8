"""One real run through `python -m espnet3.launch` (2 Ray Train workers): the console, the rank logs,
several best_model_criterion entries, a recipe callback, a user logger, EMA, then --stages pack."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import soundfile
import torch

from espnet3 import launch
from espnet3.utils.espnet2_imports import import_espnet2
from paths import REPO

MARKER = '''
from pathlib import Path

import lightning as L


class Marker(L.Callback):
    """Proves a recipe's own callback runs in every worker: one file per rank at the end of training."""

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer, pl_module):
        (self.out_dir / f"marker_rank{trainer.global_rank}").write_text(str(trainer.global_step))
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ecosystem")
    recipe = root / "recipe"
    (recipe / "ecosystem_recipe").mkdir(parents=True)
    (recipe / "ecosystem_recipe" / "__init__.py").write_text("")
    (recipe / "ecosystem_recipe" / "marker.py").write_text(MARKER)
    (recipe / "train.yaml").write_text((REPO / "configs" / "tiny_asr.yaml").read_text())
    exp, data = root / "exp", root / "data"
    overrides = [
        f"exp_dir={exp}", f"data.train={data}/train", f"data.valid={data}/valid", f"data.test.test={data}/test",
        "best_model_criterion=[[valid/loss,2,min],[valid/acc,1,max]]",
        f"callbacks=[{{_target_: ecosystem_recipe.marker.Marker, out_dir: '{exp}'}}]",
        f"loggers=[{{_target_: lightning.pytorch.loggers.CSVLogger, save_dir: '{exp}', name: csv}}]",
        "ema={decay: 0.9, use_for: none}",
    ]
    args = ["--config", str(recipe / "train.yaml"), "--num-gpus", "0", "--num-workers", "2", *overrides]
    proc = subprocess.run([sys.executable, "-m", "espnet3.launch", *args, "--stages", "train"],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"exp": exp, "data": data, "stdout": proc.stdout, "stderr": proc.stderr, "args": args}


@pytest.mark.slow
def test_the_console_shows_each_epochs_progress_and_validation_once(run):
    lines = run["stdout"].splitlines()
    epoch_lines = [line for line in lines if line.startswith("[espnet3] epoch")]
    assert len(epoch_lines) == len(set(epoch_lines)), epoch_lines
    valid = [line for line in epoch_lines if " valid " in line]
    assert [line.split(" valid ")[0] for line in valid] == ["[espnet3] epoch 1/2", "[espnet3] epoch 2/2"]
    total = json.loads((run["exp"] / "train_result.json").read_text())["metrics"]["step"]  # 2 epochs, 1 batch/step
    progress = [line for line in epoch_lines if " valid " not in line]
    assert [line.split()[4] for line in progress] == [f"{s}/{total}" for s in range(2, total + 1, 2)]
    assert all(" loss " in line and " utt/s ETA " in line for line in progress)
    for noise in ("weights_only", "💡", "Tip:", "RayTrainWorker", "Trainable params", "GPU available"):
        assert noise not in run["stdout"], noise
    for noise in ("Token authentication", "PreemptionWatcher", "RayTrainWorker", "TrainController"):
        assert noise not in run["stderr"], noise


@pytest.mark.slow
def test_each_rank_keeps_its_full_output_in_a_log_file(run):
    logs = run["exp"] / "logs"
    rank0, rank1 = (logs / "rank0.log").read_text(), (logs / "rank1.log").read_text()
    assert "Trainable params" in rank0 and "Trainable params" not in rank1  # model summary: rank 0 only
    assert "[espnet3] epoch 2/2 valid" in rank0
    assert "Vocabulary size" in rank1  # ESPnet2's own output, from every rank


@pytest.mark.slow
def test_every_criterion_is_averaged_and_the_user_callback_logger_and_ema_ran(run):
    exp = run["exp"]
    result = json.loads((exp / "train_result.json").read_text())
    assert [c["criterion"][0] for c in result["criteria"]] == ["valid/loss", "valid/acc"]
    assert [len(c["checkpoints"]) for c in result["criteria"]] == [2, 1]
    assert (exp / "valid.loss.ave_2best.pth").is_file() and (exp / "valid.acc.ave_1best.pth").is_file()
    assert result["averaged_model"] == str(exp / "valid.loss.ave_2best.pth")
    kept = {Path(c["path"]).name for criterion in result["criteria"] for c in criterion["checkpoints"]}
    reported = sorted(d for d in exp.glob("checkpoint_*") if d.is_dir())
    kept.add(reported[-1].name)  # the latest, which a resumed run continues from
    assert {d.name for d in reported if (d / "checkpoint.ckpt").is_file()} == kept
    steps = {(exp / f"marker_rank{r}").read_text() for r in (0, 1)}
    assert steps == {str(result["metrics"]["step"])}
    assert "valid/loss" in next(exp.glob("csv/*/metrics.csv")).read_text()
    ema, last = torch.load(exp / "ema.pth"), torch.load(exp / "last.pth")
    assert set(ema) == set(last) and any(not torch.equal(ema[k], last[k]) for k in ema)


@pytest.mark.slow
def test_pack_stage_zip_decodes_with_speech2text_from_the_zip_alone(run, tmp_path):
    assert launch.main([*run["args"], "--stages", "pack"]) == 0
    packed = run["exp"] / "packed" / "train.zip"  # named after the run (the config file's stem)
    with zipfile.ZipFile(packed) as archive:
        assert "exp/train/valid.loss.ave_2best.pth" in archive.namelist()
    unpack = import_espnet2("espnet2.main_funcs.pack_funcs").unpack
    Speech2Text = import_espnet2("espnet2.bin.asr_inference").Speech2Text
    speech2text = Speech2Text(**unpack(packed, tmp_path / "unpacked"), device="cpu", beam_size=2, nbest=1)
    wav = (run["data"] / "test" / "wav.scp").read_text().split("\n")[0].split(maxsplit=1)[1]
    speech, _ = soundfile.read(wav, dtype="float32")
    text, tokens, token_ids, _ = speech2text(speech)[0]
    assert isinstance(text, str) and len(token_ids) == len(tokens)
