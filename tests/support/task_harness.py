"""Tiny runs of a task config in this process, through the launcher's own pieces (no Ray).

The synthetic corpus, the data plan (ESPnet2 dataset, task preprocessor, samplers, collate),
collect_stats where the config normalises with global_mvn, then ESPnetLightningModule under a
Lightning Trainer for two training steps and one validation batch. Shared by the shipped task
configs' tests and the converted egs2 recipe configs' tests.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import yaml
import torch
from omegaconf import OmegaConf

from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from espnet3.config import load_config
from espnet3.orchestration.preparation import absolutize, default_stages, prepare_data, stats_model
from espnet3.stages.collect_stats import collect_stats
from espnet3.utils.task_utils import build_model
from paths import CONFIGS

TASK_CONFIGS = CONFIGS / "tasks"
TINY = {"num_train": 24, "num_valid": 6, "num_test": 6}
TRAINER_KEYS = ("max_epochs", "limit_train_batches", "limit_val_batches", "num_sanity_val_steps", "gradient_clip_val")


def tiny_overrides(task: str, root: Path, corpus: Path | None = None) -> list[str]:
    """Overrides that shrink ``configs/tasks/<task>.yaml`` (or a config with its data section) to 2 steps.

    ``corpus``: where the tiny corpus is (made there when absent; default ``root``), so several
    tests can share one.
    """
    corpus = root if corpus is None else corpus
    overrides = [f"exp_dir={root}/exp", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                 "+trainer.limit_val_batches=1", "+trainer.num_sanity_val_steps=0"]
    if task == "asr1":
        overrides += [f"data.{s}={corpus}/digits/{s}" for s in ("train", "valid")]
        overrides += [f"data.test.test={corpus}/digits/test", "data.digits.num_train=24", "data.digits.num_valid=6",
                      "data.digits.num_test=6"]
    else:
        overrides += [f"data.synth.dir={corpus}/corpus", *(f"+data.synth.{k}={v}" for k, v in TINY.items())]
    return overrides


def tiny_config(path: Path, task: str, root: Path, *extra: str, corpus: Path | None = None):
    cfg = load_config(path, [*tiny_overrides(task, root, corpus), *extra])
    absolutize(cfg)
    return cfg


def train_two_steps(cfg):
    """Train ``cfg`` for two steps and one validation batch; return (plan, model, module, trainer).

    Raises AssertionError when no parameter moved or nothing was validated.
    """
    stages = default_stages(cfg)
    plan = prepare_data(cfg, stages)
    plan.prepare_shapes(["train", "valid", *(["test"] if "infer" in stages else [])])
    if "collect_stats" in stages:
        collect_stats(*stats_model(cfg, plan), plan, num_shards=1)
    torch.manual_seed(0)
    model = build_model(cfg, plan=plan)
    module = ESPnetLightningModule(model, OmegaConf.to_container(cfg, resolve=True))
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        **{k: v for k, v in cfg.trainer.items() if k in TRAINER_KEYS})
    trainer.fit(module, plan.dataloader("train"), plan.dataloader("valid"))
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    moved = any(not torch.equal(a, b) for a, b in zip(before, after))
    assert moved, f"two training steps moved no parameter (skipped batches: {module.nan_guard.total_skips})"
    assert any(k.startswith("valid/") for k in trainer.callback_metrics)
    return plan, model, module, trainer


# Model options that name files of the family's corpus (spk.sh / lid.sh pass them on the command line).
CORPUS_MODEL_KEYS = ("spk2utt", "lang2utt")


def with_corpus_of(converted: Path, family: str, out: Path, base: str | None = None) -> Path:
    """A converted recipe config given the corpus of ``configs/tasks/<base or family>.yaml``.

    What a user does after converting: point ``data:`` at their data (here the synthetic corpus),
    and cut the batches to the machine (here the shipped config's ``dataloader:``).
    """
    recipe = yaml.safe_load(converted.read_text())
    shipped = yaml.safe_load((TASK_CONFIGS / f"{base or family}.yaml").read_text())
    recipe["data"] = {**{k: v for k, v in recipe["data"].items() if k in ("token_type", "nbpe", "bpemodel")},
                      **shipped["data"]}
    recipe["dataloader"] = shipped.get("dataloader") or {"batch_type": "unsorted", "batch_size": 4}
    for key in CORPUS_MODEL_KEYS:
        if key in (shipped.get("model") or {}):
            recipe["model"][key] = shipped["model"][key]
    out.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return out
