"""Convert an ESPnet2 training config (egs2/*/conf/train_*.yaml) into an espnet3 train.yaml.

Usage::

    python -m espnet3.from_espnet2 conf/train_asr_conformer.yaml -o train.yaml \\
        [--task asr1] [trainer.max_epochs=20 +trainer.foo=1 ...]

The network options move under ``model`` unchanged (the same ESPnet2 task builds them);
trainer, batching and optimisation options are translated to their train.yaml keys. A
key without an equivalent is never dropped silently: it is printed and listed in the
output's comment header. Data paths are placeholders (``data/train``) to edit.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from espnet3.config import ConfigError, load_config, load_defaults
from espnet3.config.loader import merge_with_defaults
from espnet3.config.overrides import apply_overrides
from espnet3.data.sampler import BATCH_TYPES
from espnet3.data.spec import TOKEN_TYPES
from espnet3.utils.task_utils import default_config, model_keys, preprocess_keys, resolve_task

# espnet2.tasks.abs_task.optim_classes, by their torch names.
OPTIMIZERS: dict[str, str] = {
    "adam": "torch.optim.Adam",
    "adamw": "torch.optim.AdamW",
    "sgd": "torch.optim.SGD",
    "adadelta": "torch.optim.Adadelta",
    "adagrad": "torch.optim.Adagrad",
    "adamax": "torch.optim.Adamax",
    "asgd": "torch.optim.ASGD",
    "lbfgs": "torch.optim.LBFGS",
    "rmsprop": "torch.optim.RMSprop",
    "rprop": "torch.optim.Rprop",
}
# espnet2.optimizers.sgd.SGD defaults lr to 0.1; torch's SGD to 0.001.
ESPNET2_SGD_LR = 0.1


@dataclass(frozen=True)
class SchedulerTarget:
    """Where an ESPnet2 scheduler name goes in train.yaml.

    Attributes:
        target: the class for ``scheduler._target_``.
        interval: ``scheduler_interval``; ESPnet2 steps batch schedulers every iteration
            and the others every epoch.
        monitored: whether it steps on a validation metric (``scheduler_monitor``).
    """

    target: str
    interval: str
    monitored: bool = False


_LR = "torch.optim.lr_scheduler"
# espnet2.tasks.abs_task.scheduler_classes minus lambdalr (needs a Python function) and
# warmupreducelronplateau (steps both per batch and per validation).
SCHEDULERS: dict[str, SchedulerTarget] = {
    "warmuplr": SchedulerTarget("espnet2.schedulers.warmup_lr.WarmupLR", "step"),
    "noamlr": SchedulerTarget("espnet2.schedulers.noam_lr.NoamLR", "step"),
    "warmupsteplr": SchedulerTarget("espnet2.schedulers.warmup_step_lr.WarmupStepLR", "step"),
    "piecewiselinearwarmuplr": SchedulerTarget(
        "espnet2.schedulers.piecewise_linear_warmup_lr.PiecewiseLinearWarmupLR", "step"
    ),
    "cosineannealingwarmuprestarts": SchedulerTarget(
        "espnet2.schedulers.cosine_anneal_warmup_restart.CosineAnnealingWarmupRestarts", "step"
    ),
    "tristagelr": SchedulerTarget("espnet2.schedulers.tristage_lr.TristageLR", "step"),
    "exponentialdecaywarmup": SchedulerTarget(
        "espnet2.schedulers.exponential_decay_warmup.ExponentialDecayWarmup", "step"
    ),
    "cycliclr": SchedulerTarget(f"{_LR}.CyclicLR", "step"),
    "onecyclelr": SchedulerTarget(f"{_LR}.OneCycleLR", "step"),
    "cosineannealingwarmrestarts": SchedulerTarget(f"{_LR}.CosineAnnealingWarmRestarts", "step"),
    "reducelronplateau": SchedulerTarget(f"{_LR}.ReduceLROnPlateau", "epoch", monitored=True),
    "steplr": SchedulerTarget(f"{_LR}.StepLR", "epoch"),
    "multisteplr": SchedulerTarget(f"{_LR}.MultiStepLR", "epoch"),
    "exponentiallr": SchedulerTarget(f"{_LR}.ExponentialLR", "epoch"),
    "cosineannealinglr": SchedulerTarget(f"{_LR}.CosineAnnealingLR", "epoch"),
}

# ESPnet2 batch types -> espnet3's, with what changes in meaning.
# asr.sh passes --fold_length on the command line (speech samples, then tokens), not in the config.
ASR_SH_FOLD_LENGTH = [80000, 150]
# ESPnet2 batching options with the same name and meaning in `dataloader:`.
DATALOADER_KEYS = ("batch_bins", "batch_size", "num_workers", "fold_length", "sort_in_batch", "sort_batch",
                   "drop_last_iter", "min_batch_size", "max_batch_size", "upsampling_factor", "dataset_scaling_factor")

ESPNET2_KEEP_NBEST = 10
# ESPnet2 options whose defaults (40 epochs, clipping at 5, Adadelta without a scheduler)
# differ from train.yaml's: the converted run must train as the ESPnet2 one did.
# (Not their *_conf: ESPnet2's default conf is the class signature, torch-version noise.)
TRAINING_DEFAULTS_KEPT = ("max_epoch", "grad_clip", "optim", "scheduler")
PLACEHOLDER_DATA = {"train": "data/train", "valid": "data/valid", "test": {"test": "data/test"}}


@dataclass
class Conversion:
    """The result of converting one ESPnet2 config.

    Attributes:
        config: the train.yaml content (plain containers).
        unmapped: ESPnet2 keys with no train.yaml equivalent -> why.
        notes: changes in meaning the user should review.
    """

    config: dict[str, Any]
    unmapped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def convert(espnet2: Mapping[str, Any], task: str = "asr1") -> Conversion:
    """Translate an ESPnet2 training config (already parsed) for ``task``."""
    task_cls = resolve_task(task)
    defaults = default_config(task_cls)
    network = set(model_keys(task_cls))
    preprocess = set(preprocess_keys(task_cls))
    out: dict[str, Any] = {"task": task}
    conv = Conversion(out)
    model: dict[str, Any] = {"token_list": "${data.token_list}"}
    data: dict[str, Any] = copy.deepcopy(PLACEHOLDER_DATA)
    trainer: dict[str, Any] = {}
    dataloader: dict[str, Any] = {}
    # ESPnet2's str_or_none options accept the string "none" for None.
    rest = {k: None if isinstance(v, str) and v.lower() == "none" else v for k, v in espnet2.items()}
    # Where ESPnet2 and train.yaml defaults differ, an unset key meant ESPnet2's default.
    implied = {k: defaults[k] for k in TRAINING_DEFAULTS_KEPT if k not in rest}
    if implied:
        conv.notes.append(f"unset in the ESPnet2 config, so its defaults were written: {implied}")
    rest.update(implied)

    for key in list(rest):
        if key in network and key != "token_list":
            model[key] = rest.pop(key)
    token_list = rest.pop("token_list", None)
    if isinstance(token_list, list):
        model["token_list"] = token_list
    elif token_list is not None:
        data["token_list"] = str(token_list)
    if "freeze_param" in rest:
        model["freeze_param"] = list(rest.pop("freeze_param") or [])
    if "seed" in rest:
        out["seed"] = rest.pop("seed")

    _convert_tokenizer(rest, data, conv)
    preprocessor = _convert_preprocessing(rest, preprocess, defaults)
    _convert_optimizer(rest, out, conv)
    _convert_scheduler(rest, out, conv)
    _convert_trainer(rest, trainer, conv)
    _convert_batching(rest, dataloader, conv)
    _convert_best_model(rest, out)
    _convert_logging(rest, out)

    for key, value in rest.items():
        if key in defaults and value == defaults[key]:
            continue  # ESPnet2's own default: nothing to carry over.
        conv.unmapped[key] = f"{value!r} -> no train.yaml equivalent"

    if "normalize" not in model:
        conv.notes.append(
            "asr.sh adds normalize=global_mvn with collect_stats statistics; to do the same, pass "
            "+model.normalize=global_mvn +model.normalize_conf.stats_file='${stats_dir}/train/feats_stats.npz'"
        )
    out["model"] = model
    out["data"] = data
    if preprocessor:
        out["preprocessor"] = preprocessor
    if dataloader:
        out["dataloader"] = dataloader
    if trainer:
        out["trainer"] = trainer
    order = list(load_defaults().keys())
    conv.config = {key: out[key] for key in sorted(out, key=order.index)}
    return conv


def _convert_tokenizer(rest: dict[str, Any], data: dict[str, Any], conv: Conversion) -> None:
    """The main text stream's vocabulary: ``data.token_*``, which espnet3 builds when missing.

    Other token types (hugging_face, whisper_*) stay ESPnet2 preprocessing options; their
    token list then has to exist already.
    """
    if rest.get("token_type") in TOKEN_TYPES:
        data["token_type"] = rest.pop("token_type")
    if rest.get("bpemodel") is not None and data.get("token_type") == "bpe":
        data["bpemodel"] = str(rest.pop("bpemodel"))


def _convert_preprocessing(rest: dict[str, Any], preprocess: set[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """The task's preprocessing options that differ from ESPnet2's defaults: the ``preprocessor:`` block."""
    block = {}
    for key in [k for k in rest if k in preprocess]:
        value = rest.pop(key)
        if key not in defaults or value != defaults[key]:
            block[key] = value
    return block


def _convert_optimizer(rest: dict[str, Any], out: dict[str, Any], conv: Conversion) -> None:
    name = str(rest.pop("optim")).lower()
    kwargs = dict(rest.pop("optim_conf", None) or {})
    if name not in OPTIMIZERS:
        conv.unmapped["optim"] = f"{name!r} -> no torch.optim class; set optimizer._target_ yourself"
        conv.unmapped["optim_conf"] = f"{kwargs!r} -> kwargs of {name!r}"
        return
    if name == "sgd":
        kwargs.setdefault("lr", ESPNET2_SGD_LR)
    out["optimizer"] = {"_target_": OPTIMIZERS[name], **kwargs}


def _convert_scheduler(rest: dict[str, Any], out: dict[str, Any], conv: Conversion) -> None:
    criterion = rest.pop("val_scheduler_criterion", ["valid", "loss"])
    name = rest.pop("scheduler")
    kwargs = dict(rest.pop("scheduler_conf", None) or {})
    if name is None:
        out["scheduler"] = None
        return
    target = SCHEDULERS.get(str(name).lower())
    if target is None:
        conv.unmapped["scheduler"] = f"{name!r} -> cannot be expressed as one train.yaml scheduler"
        conv.unmapped["scheduler_conf"] = f"{kwargs!r} -> kwargs of {name!r}"
        return
    out["scheduler"] = {"_target_": target.target, **kwargs}
    out["scheduler_interval"] = target.interval
    if target.monitored:
        out["scheduler_monitor"] = "/".join(str(part) for part in criterion)


def _convert_trainer(rest: dict[str, Any], trainer: dict[str, Any], conv: Conversion) -> None:
    if "max_epoch" in rest:
        trainer["max_epochs"] = rest.pop("max_epoch")
    if "accum_grad" in rest:
        trainer["accumulate_grad_batches"] = rest.pop("accum_grad")
    if "grad_clip" in rest:
        clip = rest.pop("grad_clip")
        trainer["gradient_clip_val"] = clip if clip is not None and clip > 0 else None
    clip_type = rest.pop("grad_clip_type", 2.0)
    if clip_type != 2.0:
        conv.unmapped["grad_clip_type"] = f"{clip_type!r} -> Lightning clips the 2-norm or by value only"
    if rest.pop("use_amp", False):
        trainer["precision"] = "16-mixed"
    if rest.get("log_interval") is not None:
        trainer["log_every_n_steps"] = rest.pop("log_interval")


def _convert_batching(rest: dict[str, Any], dataloader: dict[str, Any], conv: Conversion) -> None:
    """ESPnet2's batch types and options carry over by name (espnet3 batches with ESPnet2's samplers)."""
    batch_type = rest.pop("batch_type", "folded" if "batch_size" in rest else None)  # ESPnet2's default
    if batch_type is not None:
        if batch_type not in BATCH_TYPES:
            conv.unmapped["batch_type"] = f"{batch_type!r} -> no espnet3 batch type"
        else:
            dataloader["batch_type"] = batch_type
    for key in DATALOADER_KEYS:
        if key in rest:
            dataloader[key] = rest.pop(key)
    if dataloader.get("batch_type") == "folded" and "fold_length" not in dataloader:
        dataloader["fold_length"] = list(ASR_SH_FOLD_LENGTH)
        conv.notes.append(
            f"batch_type folded: fold_length {ASR_SH_FOLD_LENGTH} (asr.sh's defaults for speech samples and "
            "tokens; one per data stream); per-worker sizes: divide batch_size by the number of workers"
        )


def _convert_best_model(rest: dict[str, Any], out: dict[str, Any]) -> None:
    keep = rest.pop("keep_nbest_models", ESPNET2_KEEP_NBEST)
    keep = max(keep) if isinstance(keep, list) else keep
    if "best_model_criterion" in rest:
        out["best_model_criterion"] = [
            [f"{phase}/{metric}", keep, mode] for phase, metric, mode in rest.pop("best_model_criterion")
        ]


def _convert_logging(rest: dict[str, Any], out: dict[str, Any]) -> None:
    logging: dict[str, Any] = {}
    if "use_tensorboard" in rest:
        logging["tensorboard"] = bool(rest.pop("use_tensorboard"))
    wandb_keys = {k: rest.pop(k) for k in ("wandb_project", "wandb_entity", "wandb_name") if k in rest}
    if rest.pop("use_wandb", False):
        logging["wandb"] = {k.removeprefix("wandb_"): v for k, v in wandb_keys.items() if v is not None}
    if logging:
        out["logging"] = logging


def render(conversion: Conversion, source: str | Path) -> str:
    """The train.yaml text: a comment header with what to review, then the config."""
    lines = [
        f"# Converted from {source} by `python -m espnet3.from_espnet2`.",
        "# Edit the data.* paths (placeholders) before training.",
    ]
    if conversion.unmapped:
        lines.append("# ESPnet2 keys NOT carried over (key: value -> why):")
        lines += [f"#   {key}: {reason}" for key, reason in conversion.unmapped.items()]
    if conversion.notes:
        lines.append("# Review:")
        lines += [f"#   {note}" for note in conversion.notes]
    body = yaml.safe_dump(conversion.config, sort_keys=False, default_flow_style=None, width=100)
    return "\n".join(lines) + "\n" + body


def convert_file(
    source: str | Path, output: str | Path, task: str = "asr1", overrides: Sequence[str] = ()
) -> Conversion:
    """Convert ``source`` into ``output``, apply ``overrides``, and check it loads.

    Raises:
        ConfigError: when the result does not pass :func:`espnet3.config.load_config`
            (the file is still written, for inspection).
    """
    source, output = Path(source), Path(output)
    with source.open(encoding="utf-8") as f:
        espnet2 = yaml.safe_load(f)
    if not isinstance(espnet2, Mapping):
        raise ValueError(f"{source}: expected an ESPnet2 config mapping, got {type(espnet2).__name__}")
    conversion = convert(espnet2, task)
    if overrides:
        cfg = OmegaConf.create(conversion.config)
        known = merge_with_defaults(OmegaConf.create(conversion.config), output)
        apply_overrides(cfg, overrides, source, known=known)
        conversion.config = OmegaConf.to_container(cfg, resolve=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(conversion, source), encoding="utf-8")
    load_config(output)
    return conversion


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m espnet3.from_espnet2",
        description="Convert an ESPnet2 training config into an espnet3 train.yaml.",
    )
    parser.add_argument("config", type=Path, help="ESPnet2 config (egs2/*/conf/train_*.yaml)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="train.yaml to write")
    parser.add_argument("--task", default="asr1", help="recipe name or task class path (default: asr1)")
    parser.add_argument("overrides", nargs="*", help="key=value / +key=value, as for load_config")
    args = parser.parse_intermixed_args(argv)
    try:
        conversion = convert_file(args.config, args.output, args.task, args.overrides)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    for key, reason in conversion.unmapped.items():
        print(f"not mapped: {key} ({reason})")
    for note in conversion.notes:
        print(f"review: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
