"""Every task family in configs/tasks/: its corpus, data plan, two training steps, infer and measure.

Each shipped config runs at tiny size in this process (no Ray: the launcher's Ray path is covered
by tests/test_launch.py), through the same pieces the launcher uses: the synthetic corpus, the
data plan (ESPnet2 dataset, task preprocessor, samplers, collate), collect_stats where the config
normalises with global_mvn, ESPnetLightningModule under Lightning, the ESPnet2 export, the task's
inference class and its metrics.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from espnet3.config import load_config
from espnet3.export import save_model_pth, write_espnet2_config
from espnet3.orchestration.preparation import absolutize, default_stages, prepare_data, stats_model
from espnet3.stages.collect_stats import collect_stats
from espnet3.stages.evaluation import EvaluationPlan
from espnet3.stages.infer import infer
from espnet3.stages.measure import measure
from espnet3.utils.task_utils import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tasks"
# The metrics each family reports (None: not measurable at this size, e.g. no ASR model for TTS).
METRICS = {
    "asr1": {"cer", "wer"},
    "lm1": {"ppl"},
    "mt1": {"bleu", "chrf"},
    "st1": {"bleu", "chrf"},
    "cls1": {"accuracy"},
    "lid1": {"accuracy"},
    "spk1": {"eer", "min_dcf"},
    "enh1": {"si_snr", "si_snr_mix", "sdr", "sdr_mix", "si_snr_improvement", "sdr_improvement"},
    "tts1": {"mcd", "intelligibility_cer"},
    "gan_tts": {"mcd", "intelligibility_cer"},
    "codec1": {"si_snr", "mcd"},
}
TINY = {"num_train": 24, "num_valid": 6, "num_test": 6}


def test_every_shipped_task_config_is_covered():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(METRICS)


def _tiny_config(task: str, root: Path):
    overrides = [f"exp_dir={root}/exp", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                 "+trainer.num_sanity_val_steps=0", "inference.shard_size=4"]
    if task == "asr1":
        overrides += [f"data.{s}={root}/digits/{s}" for s in ("train", "valid")]
        overrides += [f"data.test.test={root}/digits/test", "data.digits.num_train=24", "data.digits.num_valid=6",
                      "data.digits.num_test=6"]
    else:
        overrides += [f"data.synth.dir={root}/corpus", *(f"+data.synth.{k}={v}" for k, v in TINY.items())]
    if task == "spk1":
        overrides.append("model.spk_num=24")  # the tiny corpus: 24 speakers, one training utterance each
    if task in ("tts1", "gan_tts"):  # no ASR run here: IntelligibilityCER reports null instead of failing
        overrides.append(f"metrics.1.asr_exp_dir={root}/no_asr")
    cfg = load_config(CONFIGS / f"{task}.yaml", overrides)
    absolutize(cfg)
    return cfg


@pytest.mark.parametrize("task", sorted(METRICS))
def test_task_config_trains_two_steps_then_infers_and_measures(task, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in the configs' model blocks resolve here
    cfg = _tiny_config(task, tmp_path)
    stages = [s for s in default_stages(cfg)]
    plan = prepare_data(cfg, stages)
    if task == "spk1":
        assert len((Path(cfg.data.synth.dir) / "train" / "spk2utt").read_text().splitlines()) == 24
    plan.prepare_shapes(["train", "valid", "test"])
    if "collect_stats" in stages:
        collect_stats(*stats_model(cfg, plan), plan, num_shards=1)
    torch.manual_seed(0)
    model = build_model(cfg, plan=plan)
    module = ESPnetLightningModule(model, OmegaConf.to_container(cfg, resolve=True))
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        **{k: v for k, v in cfg.trainer.items() if k in ("max_epochs", "limit_train_batches",
                                                                         "limit_val_batches", "num_sanity_val_steps",
                                                                         "gradient_clip_val")})
    trainer.fit(module, plan.dataloader("train"), plan.dataloader("valid"))
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    moved = any(not torch.equal(a, b) for a, b in zip(before, after))
    assert moved, f"two training steps moved no parameter (skipped batches: {module.nan_guard.total_skips})"
    assert any(k.startswith("valid/") for k in trainer.callback_metrics)

    exp = Path(cfg.exp_dir)
    write_espnet2_config(plan.preprocess, exp, seed=int(cfg.seed))
    save_model_pth(model, exp / "model.pth")
    evaluation = EvaluationPlan.from_config(OmegaConf.to_container(cfg, resolve=True), exp / "model.pth")
    infer(plan, evaluation.system.inference_class(), evaluation.model, evaluation.inference,
          evaluation.infer_dir, splits=["test"])
    tts = task in ("tts1", "gan_tts")
    with pytest.warns(UserWarning, match="IntelligibilityCER needs a trained ASR") if tts else nullcontext():
        metrics = evaluation.metrics()
    scores = measure(plan, metrics, evaluation.infer_dir, ["test"])["test"]
    assert set(scores) == METRICS[task]
    for name, value in scores.items():
        if tts and name == "intelligibility_cer":
            assert value is None
        else:
            assert isinstance(value, float) and math.isfinite(value), (name, value)
