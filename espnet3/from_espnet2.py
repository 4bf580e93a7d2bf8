"""Convert an ESPnet2 training config (egs2/*/conf/train_*.yaml) into an espnet3 train.yaml.

Usage::

    python -m espnet3.from_espnet2 conf/train_asr_conformer.yaml -o train.yaml \\
        [--task asr1] [--recipe-args "--fs 22050 --token_type phn --g2p g2p_en"] \\
        [trainer.max_epochs=20 +trainer.foo=1 ...]

The network options move under ``model`` unchanged (the same ESPnet2 task builds them), only
those the task accepts; trainer, batching and optimisation options are translated to their
train.yaml keys (a GAN task's ``optim``/``optim2`` to ``optimizers:``); what the recipe's
template script adds on its command line (data streams and fold lengths, collect_stats
statistics, run.sh options given as ``--recipe-args``) is filled from
:mod:`espnet3.systems.recipe_scripts`. A key without an equivalent is never dropped silently:
it is printed and listed in the output's comment header. Data paths are placeholders
(``data/train``, or the script's ``[data/train/<file>, name, type]`` triples) to edit.
"""

from __future__ import annotations

import argparse
import copy
import math
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
from espnet3.systems import recipe_scripts
from espnet3.systems.recipe_scripts import FBANK_ONLY, NORMALIZE_NAMES, NOT_TRAINING, STATS_FILES, RecipeScript
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

# The template scripts pass --fold_length on the command line (one per data stream), not in the config;
# without a known script (a task class path), asr.sh's speech samples and tokens.
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
# ESPnet2's GANTrainer options, besides optim2/scheduler2.
GAN_DEFAULTS = {"generator_first": False, "skip_discriminator_prob": 0.0}


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


def convert(espnet2: Mapping[str, Any], task: str = "asr1", recipe_args: str | Mapping[str, str] = "") -> Conversion:
    """Translate an ESPnet2 training config (already parsed) for ``task``.

    Args:
        espnet2: the recipe's ``conf/train_*.yaml``.
        task: recipe name (``tts1``) or task class path.
        recipe_args: run.sh's options for the template script (``"--fs 22050 --g2p g2p_en"``).
    """
    task_cls = resolve_task(task)
    script = recipe_scripts.script_for(task) if isinstance(task, str) else None
    options = recipe_scripts.parse_recipe_args(recipe_args) if isinstance(recipe_args, str) else dict(recipe_args)
    espnet2 = _apply_script_args(espnet2, options)
    defaults = default_config(task_cls)
    network = set(model_keys(task_cls))
    preprocess = set(preprocess_keys(task_cls))
    out: dict[str, Any] = {"task": task}
    conv = Conversion(out)
    model: dict[str, Any] = {"token_list": "${data.token_list}"} if "token_list" in network else {}
    data: dict[str, Any] = {}
    trainer: dict[str, Any] = {}
    dataloader: dict[str, Any] = {}
    # ESPnet2's str_or_none options accept the string "none" for None.
    rest = {k: None if isinstance(v, str) and v.lower() == "none" else v for k, v in espnet2.items()}
    gan = getattr(task_cls, "num_optimizers", 1) == 2
    # Where ESPnet2 and train.yaml defaults differ, an unset key meant ESPnet2's default.
    implied = {k: defaults[k] for k in TRAINING_DEFAULTS_KEPT if k not in rest}
    if implied:
        conv.notes.append(f"unset in the ESPnet2 config, so its defaults were written: {implied}")
    rest.update(implied)

    for key in list(rest):
        if key in network and key != "token_list":
            model[key] = rest.pop(key)
    token_list = rest.pop("token_list", None)
    if isinstance(token_list, list) and "token_list" in network:
        model["token_list"] = token_list
    elif token_list is not None and "token_list" in network:
        data["token_list"] = str(token_list)
    elif token_list is not None:
        conv.unmapped["token_list"] = f"{token_list!r} -> {task_cls.__name__} models take no token list"
    if "freeze_param" in rest:
        model["freeze_param"] = list(rest.pop("freeze_param") or [])
    if "seed" in rest:
        out["seed"] = rest.pop("seed")

    _convert_tokenizer(rest, data, conv)
    preprocessor = _convert_preprocessing(rest, preprocess, defaults)
    if script is not None and script.chunk_preprocessor:
        _convert_chunks(rest, model, preprocessor, script.chunk_preprocessor, conv)
    if gan:
        _convert_gan_optimizers(rest, out, script, conv)
    else:
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

    blocks = {"model": model, "data": data, "preprocessor": preprocessor}
    streams = _script_streams(script, model, options)
    _apply_run_sh_options(options, script, blocks, conv)
    _fill_script_files(model, preprocessor, network, preprocess, defaults)
    _fill_data(data, streams, task)
    _fill_fold_length(dataloader, streams, conv)
    _fill_normalization(model, network, defaults, script, conv)
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


def _apply_script_args(espnet2: Mapping[str, Any], options: dict[str, str]) -> dict[str, Any]:
    """``--<family>_args "--max_epoch 10 --optim_conf lr=0.001"``: ESPnet2 options over the config file.

    The scripts append ``*_args`` after ``--config``, so they win, as here. Consumed from ``options``.
    """
    merged = copy.deepcopy(dict(espnet2))
    for name in [n for n in options if n.endswith("_args") and n not in ("inference_args",)]:
        for key, value in recipe_scripts.parse_recipe_args(options.pop(name)).items():
            if key.endswith("_conf") and "=" in value:
                sub, _, sub_value = value.partition("=")
                merged.setdefault(key, {})
                merged[key] = {**(merged[key] or {}), sub: yaml.safe_load(sub_value)}
            else:
                merged[key] = yaml.safe_load(value)
    return merged


def _script_streams(script: RecipeScript | None, model: Mapping[str, Any], options: Mapping[str, str]
                    ) -> list[recipe_scripts.Stream]:
    """The ``[file, name, type]`` streams the template script would train on, languages filled in.

    enh.sh passes one ``spk<n>.scp`` per reference (``--ref_num``, else the separator's ``num_spk``).
    """
    if script is None:
        return []
    streams = list(script.streams)
    refs = options.get("ref_num") or (model.get("separator_conf") or {}).get("num_spk")
    if refs and any(s.name == "speech_ref1" for s in streams):
        first = next(s for s in streams if s.name == "speech_ref1")
        at = streams.index(first)
        extra = [recipe_scripts.Stream(f"spk{n}.scp", f"speech_ref{n}", first.type, first.fold_length)
                 for n in range(2, int(refs) + 1)]
        streams[at + 1 : at + 1] = extra
    langs = {"src_lang": options.get("src_lang", "src"), "tgt_lang": options.get("tgt_lang", "tgt")}
    return [recipe_scripts.Stream(s.file.replace("${src_lang}", langs["src_lang"]).replace("${tgt_lang}", langs["tgt_lang"]),
                                  s.name, s.type, s.fold_length) for s in streams]


# Files the scripts write and pass on the command line, and where espnet3 writes (or reads) them.
SCRIPT_MODEL_FILES = {"spk2utt": "data/train/spk2utt", "lang2utt": "data/train/lang2utt"}
SOURCE_TOKEN_LIST = "${exp_dir}/src_tokens.txt"
SOURCE_BPE_MODEL = "${exp_dir}/src_bpe.model"


def _fill_script_files(model: dict[str, Any], preprocessor: dict[str, Any], network: set[str],
                       preprocess: set[str], defaults: Mapping[str, Any]) -> None:
    """What the scripts always pass: spk.sh/lid.sh the class -> utterances file (its line count is
    ``spk_num``/``lang_num``), mt.sh/st.sh the source token list (written from ``src_text``)."""
    for key, path in SCRIPT_MODEL_FILES.items():
        if key in network and not model.get(key):
            model[key] = path
    if "src_token_list" in preprocess and not preprocessor.get("src_token_list"):
        preprocessor["src_token_list"] = SOURCE_TOKEN_LIST
        src_type = preprocessor.get("src_token_type", defaults.get("src_token_type"))
        if src_type == "bpe" and not preprocessor.get("src_bpemodel"):
            preprocessor["src_bpemodel"] = SOURCE_BPE_MODEL


def _convert_chunks(rest: dict[str, Any], model: Mapping[str, Any], preprocessor: dict[str, Any], target: str,
                    conv: Conversion) -> None:
    """codec.sh trains on fixed-length chunks (``iterator_type: chunk``): espnet3's chunking preprocessor,
    whose length is a multiple of the codec's hop (the product of its encoder ratios)."""
    chunks = {k: rest.pop(k) for k in ("iterator_type", "chunk_length") if k in rest}
    if chunks.get("iterator_type") != "chunk" or not chunks.get("chunk_length"):
        conv.unmapped.update({k: f"{v!r} -> only `iterator_type: chunk` with chunk_length maps" for k, v in chunks.items()})
        return
    params = (model.get("codec_conf") or {}).get("generator_params") or {}
    ratios = params.get("encdec_ratios") or params.get("ratios") or [8, 5, 4, 2]
    hop = math.prod(int(r) for r in ratios)
    length = int(chunks["chunk_length"]) // hop * hop
    preprocessor.clear()  # a _target_ preprocessor takes no ESPnet2 preprocessing options
    preprocessor.update({"_target_": target, "chunk_length": length, "hop_length": hop})
    conv.notes.append(f"iterator_type chunk: {length}-sample chunks ({target}, hop {hop})")


def _fill_data(data: dict[str, Any], streams: list[recipe_scripts.Stream], task: str) -> None:
    """Placeholder paths: the Kaldi-dir shorthand for ASR, the script's own triples otherwise."""
    if not streams or task == "asr1":
        data.update({k: copy.deepcopy(v) for k, v in PLACEHOLDER_DATA.items() if k not in data})
        return

    def triples(split: str) -> list[list[str]]:
        return [[f"data/{split}/{s.file}", s.name, s.type] for s in streams]

    data.update(train=triples("train"), valid=triples("valid"), test={"test": triples("test")})


def _fill_fold_length(dataloader: dict[str, Any], streams: list[recipe_scripts.Stream], conv: Conversion) -> None:
    if dataloader.get("batch_type") != "folded" or "fold_length" in dataloader:
        return
    fold = [s.fold_length for s in streams] or list(ASR_SH_FOLD_LENGTH)
    dataloader["fold_length"] = fold
    names = ", ".join(s.name for s in streams) or "speech, text"
    conv.notes.append(
        f"batch_type folded: fold_length {fold} (the template script's defaults, one per data stream: {names}); "
        "per-worker sizes: divide batch_size by the number of workers"
    )


def _fill_normalization(model: dict[str, Any], network: set[str], defaults: Mapping[str, Any],
                        script: RecipeScript | None, conv: Conversion) -> None:
    """``global_mvn`` layers read collect_stats' statistics, as the scripts pass them (``stats_file``).

    Also where the config is silent and the task's default is ``global_mvn`` (TTS): written out, so
    the launcher runs collect_stats first.
    """
    for key, stats in STATS_FILES.items():
        if key not in network or model.get(key, defaults.get(key)) != "global_mvn":
            continue
        if not (model.get(f"{key}_conf") or {}).get("stats_file"):
            model[key] = "global_mvn"
            model[f"{key}_conf"] = {**(model.get(f"{key}_conf") or {}), "stats_file": stats}
            conv.notes.append(f"model.{key}: global_mvn reads {stats}, which collect_stats writes before training")
    if "normalize" in network and "normalize" not in model and script is not None and script.feats_normalize:
        name = NORMALIZE_NAMES[script.feats_normalize]
        hint = (f"+model.normalize=global_mvn +model.normalize_conf.stats_file='{STATS_FILES['normalize']}'"
                if name == "global_mvn" else f"+model.normalize={name}")
        conv.notes.append(
            f"{script.name} adds normalize={name} (its --feats_normalize default) unless run.sh changes it; "
            f"to do the same, pass {hint} (or --recipe-args '--feats_normalize {script.feats_normalize}')"
        )


def _apply_run_sh_options(options: Mapping[str, str], script: RecipeScript | None,
                          blocks: dict[str, dict[str, Any]], conv: Conversion) -> None:
    """run.sh's options for the template script, into the train.yaml keys the script turns them into."""
    if not options:
        return
    known = script.options if script is not None else {}
    where = script.name if script is not None else "the template script"
    ignored = []
    for name, value in options.items():
        target = known.get(name)
        if target is None:
            if name in NOT_TRAINING or name in ("src_lang", "tgt_lang", "ref_num"):
                ignored.append(name)
            else:
                conv.unmapped[f"--{name}"] = f"{value!r} -> not an option espnet3 knows for {where}"
            continue
        if target in ("src_lang", "tgt_lang", "ref_num"):
            continue  # used for the data placeholders
        if (target.startswith("model.feats_extract_conf.") and name in FBANK_ONLY
                and blocks["model"].get("feats_extract", "fbank") != "fbank"):
            ignored.append(name)
            continue
        if target == "feats_type":
            if value != "raw":
                conv.unmapped[f"--{name}"] = f"{value!r} -> espnet3 trains on raw audio (feats_type raw)"
            continue
        if target == "bpemode":
            if value != "unigram":
                conv.unmapped[f"--{name}"] = f"{value!r} -> espnet3 trains unigram sentencepiece models"
            continue
        if target == "src_nbpe":
            conv.unmapped[f"--{name}"] = f"{value!r} -> espnet3 trains every bpe list with `data.nbpe`"
            continue
        if target == "model.normalize":
            if value not in NORMALIZE_NAMES:
                conv.unmapped[f"--{name}"] = f"{value!r} -> not a normalisation espnet3 knows ({', '.join(NORMALIZE_NAMES)})"
                continue
            blocks["model"]["normalize"] = NORMALIZE_NAMES[value]
            continue
        if target == "data.token_type" and value not in TOKEN_TYPES:
            conv.unmapped[f"--{name}"] = f"{value!r} -> espnet3 builds {', '.join(TOKEN_TYPES)} token lists"
            continue
        parsed: Any = recipe_scripts.parse_fs(value) if name == "fs" else yaml.safe_load(value)
        block, *path = target.split(".")
        node = blocks[block]
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = parsed
    if ignored:
        conv.notes.append(f"run.sh options that do not change training (data preparation, inference): "
                          f"{', '.join('--' + n for n in ignored)}")


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


def _convert_gan_optimizers(rest: dict[str, Any], out: dict[str, Any], script: RecipeScript | None,
                            conv: Conversion) -> None:
    """ESPnet2's GAN options -> ``optimizers:``/``schedulers:`` in the GANTrainer's turn order.

    The task's ``build_optimizers`` gives ``optim`` the generator's parameters and ``optim2`` the
    discriminator's (``scheduler``/``scheduler2`` likewise); ``generator_first`` picks the turn
    order, which is the order of ``optimizers:``. ``grad_clip`` clips each optimizer's gradients.
    """
    if script is None or script.gan_params is None:
        for key in ("optim", "optim_conf", "optim2", "optim2_conf", "scheduler", "scheduler_conf",
                    "scheduler2", "scheduler2_conf"):
            if key in rest:
                conv.unmapped[key] = f"{rest.pop(key)!r} -> set `optimizers:` yourself (parameter prefixes unknown)"
        out["optimizer"] = out["scheduler"] = None
        return
    generator_first = bool(rest.pop("generator_first", GAN_DEFAULTS["generator_first"]))
    skip = rest.pop("skip_discriminator_prob", GAN_DEFAULTS["skip_discriminator_prob"])
    if skip:
        conv.unmapped["skip_discriminator_prob"] = f"{skip!r} -> espnet3 runs every discriminator turn"
    clip = rest.pop("grad_clip", None)
    rest.pop("grad_clip_type", None)
    turns = {"generator": "", "discriminator": "2"}
    optimizers: dict[str, Any] = {}
    schedulers: dict[str, Any] = {}
    for name, suffix in turns.items():
        single: dict[str, Any] = {}
        _convert_optimizer({"optim": rest.pop(f"optim{suffix}", "adam"),
                            "optim_conf": rest.pop(f"optim{suffix}_conf", None)}, single, conv)
        entry: dict[str, Any] = {"optimizer": single.get("optimizer"), "params": [f"{script.gan_params}.{name}"]}
        if clip is not None and clip > 0:
            entry["gradient_clip_val"] = clip
        optimizers[name] = entry
        _convert_scheduler({"scheduler": rest.pop(f"scheduler{suffix}", None),
                            "scheduler_conf": rest.pop(f"scheduler{suffix}_conf", None)}, single, conv)
        if single.get("scheduler") is not None:
            schedulers[name] = {"scheduler": single["scheduler"], "interval": single["scheduler_interval"]}
            if "scheduler_monitor" in single:
                schedulers[name]["monitor"] = single["scheduler_monitor"]
    order = ["generator", "discriminator"] if generator_first else ["discriminator", "generator"]
    out["optimizer"] = out["scheduler"] = None
    out["optimizers"] = {name: optimizers[name] for name in order}
    if schedulers:
        out["schedulers"] = {name: schedulers[name] for name in order if name in schedulers}
    conv.notes.append(
        f"GAN turns: {' then '.join(order)} (generator_first: {str(generator_first).lower()}); optim -> "
        f"{script.gan_params}.generator, optim2 -> {script.gan_params}.discriminator"
    )


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


def _convert_best_model(rest: dict[str, Any], out: dict[str, Any]) -> None:
    keep = rest.pop("keep_nbest_models", ESPNET2_KEEP_NBEST)
    keep = max(keep) if isinstance(keep, list) else keep
    if "best_model_criterion" in rest:
        out["best_model_criterion"] = [
            [f"{phase}/{metric}", keep, mode] for phase, metric, mode in rest.pop("best_model_criterion")
        ]
        # ESPnet2's trainer warns about a criterion the model does not report and goes on.
        out["best_model_criterion_missing"] = "warn"


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
    source: str | Path, output: str | Path, task: str = "asr1", overrides: Sequence[str] = (),
    recipe_args: str = "",
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
    conversion = convert(espnet2, task, recipe_args)
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
    parser.add_argument("--recipe-args", default="",
                        help="run.sh's options for the template script, e.g. \"--fs 22050 --token_type phn --g2p g2p_en\"")
    parser.add_argument("overrides", nargs="*", help="key=value / +key=value, as for load_config")
    args = parser.parse_intermixed_args(argv)
    try:
        conversion = convert_file(args.config, args.output, args.task, args.overrides, args.recipe_args)
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
