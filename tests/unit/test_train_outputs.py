"""What the train stage leaves after Ray's fit: one averaged model per criterion, last.pth, ema.pth, train_result.json."""

from __future__ import annotations

import json

import pytest
import torch

from espnet3.components.ema import EMASpec
from espnet3.orchestration.criteria import BestCriterion
from espnet3.orchestration.train_spec import TrainSpec
from espnet3.stages.train import export_run

# (acc, loss) per report; the trained weight of report i is i, its EMA weight 10 + i.
HISTORY = [(0.5, 3.0), (0.7, 2.9), (0.6, 1.0), (0.4, 5.0)]
CRITERIA = (BestCriterion("valid/acc", 2, "max"), BestCriterion("valid/loss", 1, "min"))


def _run_dir(tmp_path, pruned=()):
    for i, (acc, loss) in enumerate(HISTORY):
        directory = tmp_path / f"checkpoint_2026-01-01_00-00-0{i}.000000"
        directory.mkdir()
        (directory / "metrics.json").write_text(json.dumps({"valid/acc": acc, "valid/loss": loss, "step": 10 * i}))
        if i in pruned:
            continue
        torch.save({
            "state_dict": {"model.w": torch.tensor([10.0 + i])},
            "current_model_state": {"model.w": torch.tensor([float(i)])},
        }, directory / "checkpoint.ckpt")
    return tmp_path


def _w(path) -> float:
    return torch.load(path)["w"].item()


def test_every_criterion_gets_its_own_average_of_the_trained_weights(tmp_path):
    exp = _run_dir(tmp_path, pruned=(0,))
    export_run(exp, TrainSpec(criteria=CRITERIA), {"step": 30})
    assert _w(exp / "valid.acc.ave_2best.pth") == pytest.approx((1 + 2) / 2)  # acc 0.7 and 0.6
    assert _w(exp / "valid.loss.ave_1best.pth") == 2.0
    assert _w(exp / "last.pth") == 3.0
    assert not (exp / "ema.pth").exists()
    result = json.loads((exp / "train_result.json").read_text())
    assert result["averaged_model"] == str(exp / "valid.acc.ave_2best.pth")  # the first criterion: the default
    assert [c["criterion"] for c in result["criteria"]] == [["valid/acc", 2, "max"], ["valid/loss", 1, "min"]]
    assert [c["step"] for c in result["criteria"][0]["checkpoints"]] == [10, 20]
    assert result["weights"] == "trained" and result["metrics"] == {"step": 30}


def test_ema_export_averages_the_ema_weights(tmp_path):
    exp = _run_dir(tmp_path)
    export_run(exp, TrainSpec(criteria=CRITERIA, ema=EMASpec(use_for="export")), {})
    assert _w(exp / "valid.acc.ave_2best.pth") == pytest.approx(11.5)
    assert _w(exp / "last.pth") == 13.0
    assert json.loads((exp / "train_result.json").read_text())["weights"] == "ema"


def test_ema_tracked_only_is_written_beside_the_trained_models(tmp_path):
    exp = _run_dir(tmp_path)
    export_run(exp, TrainSpec(criteria=CRITERIA, ema=EMASpec(use_for="none")), {})
    assert _w(exp / "valid.loss.ave_1best.pth") == 2.0 and _w(exp / "last.pth") == 3.0
    assert _w(exp / "ema.pth") == 13.0
    assert json.loads((exp / "train_result.json").read_text())["ema_model"] == str(exp / "ema.pth")


def test_a_criterion_no_checkpoint_reported_is_an_error_naming_it(tmp_path):
    exp = _run_dir(tmp_path)
    with pytest.raises(RuntimeError, match="valid/cer"):
        export_run(exp, TrainSpec(criteria=(BestCriterion("valid/cer", 1, "min"),)), {})
