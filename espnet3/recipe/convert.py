"""An egs3 recipe's role configs, merged over its TEMPLATE, as this project's train.yaml.

One translation, at the edge: everything downstream (checks, data plan, Ray stages) sees the same
train.yaml an espnet3 user writes, so an egs3 recipe gets the same run (DDP workers, NaN
consensus, retries, checkpoints, sweeps). Every TEMPLATE key has a place below; a key upstream
does not know is an error naming the key and the file. Upstream's per-rank batch sizes stay
per-rank (``dataloader.train.iter_factory.batches``), as upstream's DDP runs have them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espnet3.components.data.data_organizer import ENTRY_KEYS
from espnet3.errors import ConfigError
from espnet3.systems.registry import system_for
from espnet3.utils.task_utils import resolve_task

# The TEMPLATE's training.yaml keys this front end reads itself or maps.
TRAINING_KEYS = frozenset({
    "num_device", "num_nodes", "task", "recipe_dir", "data_dir", "exp_tag", "exp_dir", "stats_dir",
    "dataset_dir", "create_dataset", "dataset", "tokenizer", "model", "optimizer", "scheduler",
    "scheduler_interval", "scheduler_monitor", "optimizers", "schedulers", "best_model_criterion", "seed",
    "init", "parallel", "collect_stats_batch_size", "collect_stats_train_mode", "dataloader", "trainer", "fit",
})
INFERENCE_KEYS = frozenset({
    "recipe_dir", "exp_tag", "exp_dir", "data_dir", "dataset_dir", "inference_dir", "dataset", "parallel",
    "model", "input_key", "output_fn", "output_keys", "batch_size", "contract", "provider", "runner", "demo",
    "idx_key",
})
METRICS_KEYS = frozenset({"recipe_dir", "exp_tag", "exp_dir", "data_dir", "dataset_dir", "inference_dir", "metrics"})

# Lightning Trainer options espnet3 sets itself (from num_device x num_nodes and Ray's placement).
PLACED_BY_RAY = ("accelerator", "devices", "num_nodes", "strategy", "logger")
# Upstream's ESPnet2 inference classes, by the task family that decodes with them here.
INFERENCE_CLASSES = {
    "espnet2.bin.asr_inference.Speech2Text": ("asr_train_config", "asr_model_file"),
    "espnet2.bin.asr_transducer_inference.Speech2Text": ("asr_train_config", "asr_model_file"),
}
# Upstream's metric classes and this project's that score the same way.
METRICS = {
    "espnet3.systems.esp2_asr.metrics.wer.WER": "espnet3.systems.esp2_asr.metrics.wer.WER",
    "espnet3.systems.esp2_asr.metrics.cer.CER": "espnet3.systems.esp2_asr.metrics.cer.CER",
}
SPLIT_DATASET = "espnet3.components.data.data_organizer.RecipeSplit"


@dataclass(frozen=True)
class RoleConfig:
    """One role's config (``training``, ``inference``, ...), merged over the TEMPLATE and resolved."""

    role: str
    path: Path
    values: Mapping[str, Any]
    #: top-level names the config's own values interpolate (``${cache}``): the recipe's variables.
    variables: frozenset[str] = frozenset()

    def error(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(key, self.path, problem, fix)

    def check_keys(self, known: frozenset[str]) -> None:
        """A key neither upstream's nor a variable the config refers to is a mistake (a typo)."""
        for key in self.values:
            if key not in known and key not in self.variables:
                raise self.error(key, f"not a key of an egs3 {self.role} config, nor a variable its values "
                                 "refer to as ${...}", f"remove it, or use one of {', '.join(sorted(known))}")


def train_yaml(training: RoleConfig, inference: RoleConfig | None = None,
               metrics: RoleConfig | None = None) -> dict[str, Any]:
    """The train.yaml (a plain mapping) the three role configs amount to."""
    training.check_keys(TRAINING_KEYS)
    t = training.values
    recipe_dir = Path(str(t["recipe_dir"])).resolve()
    cfg: dict[str, Any] = {
        "name": str(t["exp_tag"]),
        "exp_dir": str(Path(str(t["exp_dir"])).resolve()),
        "stats_dir": str(Path(str(t["stats_dir"])).resolve()),
    }
    if t.get("seed") is not None:
        cfg["seed"] = int(t["seed"])
    _model(training, cfg)
    cfg["data"] = _data(training, recipe_dir, inference)
    if t.get("dataset", {}).get("preprocessor"):
        cfg["preprocessor"] = _preprocessor(training, t["dataset"]["preprocessor"])
    cfg["dataloader"] = _dataloader(training)
    # The multiple-optimizer path replaces the TEMPLATE's single optimizer and its trainer-level
    # clipping and accumulation, as upstream's does (they are set per optimizer there).
    several = t.get("optimizers") is not None
    single = () if several else ("optimizer", "scheduler", "scheduler_interval", "scheduler_monitor")
    for key in (*single, "optimizers", "schedulers", "best_model_criterion"):
        if t.get(key) is not None:
            cfg[key] = plain(t[key])
    cfg["trainer"] = _trainer(training)
    if several:
        for key in ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches"):
            cfg["trainer"].pop(key, None)
    if (t.get("fit") or {}).get("ckpt_path"):
        raise training.error("fit.ckpt_path", "Ray Train resumes a run from its own checkpoints",
                             "remove it and run the same command with --resume")
    if inference is not None:
        cfg["inference"] = _inference(inference, cfg.get("task"))
    if metrics is not None:
        cfg["metrics"] = _metrics(metrics)
    return cfg


def worker_count(training: RoleConfig) -> int:
    """``num_device`` x ``num_nodes``: upstream's DDP world size, here the number of Ray Train workers."""
    t = training.values
    count = int(t.get("num_device") or 1) * int(t.get("num_nodes") or 1)
    if count < 1:
        raise training.error("num_device", f"num_device x num_nodes is {count}", "give at least 1 device")
    return count


def plain(value: Any) -> Any:
    """A resolved plain copy without upstream's ``_convert_: all`` markers (this project's
    instantiation converts to plain containers itself)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items() if k != "_convert_"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _absolute(path: Any) -> str:
    """Upstream resolves a recipe's relative paths (``./data/bpe_30/tokens.txt``) against the directory
    run.py runs in; the train.yaml carries them absolute, as Ray workers run elsewhere."""
    return str(Path(str(path)).resolve())


def _model(training: RoleConfig, cfg: dict[str, Any]) -> None:
    t = training.values
    model = dict(plain(t.get("model")) or {})
    if not model:
        raise training.error("model", "empty", "give the model block (ESPnet2-style with `task`, or `_target_`)")
    if t.get("task"):
        cfg["task"] = str(t["task"])
        # Upstream builds ESPnet2 models from a Namespace that ignores extra keys; `vocab_size`
        # is the recipe's note of the token list's length, which ESPnet2 counts itself.
        model.pop("vocab_size", None)
        if model.get("token_list") is not None and isinstance(model["token_list"], str):
            model["token_list"] = _absolute(model["token_list"])
        _drop_preprocessing_options(training, model)
    elif "_target_" not in model:
        raise training.error("model", "neither `task` nor `model._target_` is set",
                             "set `task` (an ESPnet2 task class) or give the model a `_target_`")
    if t.get("init") is not None:
        if not t.get("task"):
            raise training.error("init", "initialises ESPnet2 task models only here",
                                 "set `task`, or initialise the `_target_` model in its own constructor")
        model["init"] = str(t["init"])  # ESPnet2's build_model applies it, as its trainer does
    cfg["model"] = model


# Preprocessing options a recipe's model block may repeat: the train.yaml's `data:` carries them.
TOKEN_OPTIONS = ("token_list", "bpemodel", "token_type")


def _drop_preprocessing_options(training: RoleConfig, model: dict[str, Any]) -> None:
    """Upstream hands the whole model block to ESPnet2 as one Namespace, so a recipe may list the
    token list there even for a task that files it under preprocessing (ESPnet2's transducer task);
    here the token settings travel in ``data:`` and the preprocessor block, and any other
    preprocessing option belongs in ``dataset.preprocessor``."""
    from espnet3.utils.task_utils import model_keys, preprocess_keys, resolve_task

    task = resolve_task(str(training.values["task"]))
    known = set(model_keys(task))
    keys = set(preprocess_keys(task)) - known
    for key in [k for k in model if k in keys]:
        if key not in TOKEN_OPTIONS:
            raise training.error(f"model.{key}", "is a preprocessing option of this task",
                                 "move it to `dataset.preprocessor`")
        model.pop(key)
    for key in [k for k in model if k not in known and k not in keys]:
        # Upstream builds from a Namespace that ignores it (mini_an4's transducer config names an
        # `encoder` its task has no choice for); dropped the same way, and said.
        print(f"[espnet3] {training.path}: `model.{key}` is not an option of {task.__name__}; ignored, as "
              "upstream ESPnet3 ignores it", file=sys.stderr, flush=True)
        model.pop(key)


def _entries(role: RoleConfig, key: str, entries: Any, recipe_dir: Path) -> dict[str, Any]:
    entries = plain(entries)
    if not isinstance(entries, list) or not entries:
        raise role.error(key, f"expected a list of dataset entries, got {entries!r}",
                         "write `- data_src_args: {split: train}` entries (data_src omitted: the recipe's dataset/)")
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise role.error(f"{key}[{index}]", f"a dataset entry is a mapping, got {entry!r}",
                             "write `{name, data_src, data_src_args, transform}`")
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            raise role.error(f"{key}[{index}].{sorted(unknown)[0]}", "not a key of a dataset entry",
                             f"use {', '.join(sorted(ENTRY_KEYS))}")
        _check_source(role, f"{key}[{index}].data_src", entry.get("data_src"), recipe_dir)
    # _recursive_: a `_target_` inside data_src_args reaches the recipe's Dataset as written, as upstream's does.
    return {"_target_": SPLIT_DATASET, "_recursive_": False, "entries": entries, "recipe_dir": str(recipe_dir)}


def _check_source(role: RoleConfig, key: str, data_src: Any, recipe_dir: Path) -> None:
    """A ``data_src`` resolves now, before Ray: a typo here would otherwise fail on every worker."""
    from espnet3.components.data.dataset_module import load_dataset_module

    try:
        load_dataset_module(data_src=data_src, recipe_dir=recipe_dir)
    except (ImportError, ValueError, TypeError) as exc:
        where = "the recipe's dataset/ package" if data_src is None else f"data_src {data_src!r}"
        raise role.error(key, f"{where} does not load ({exc})",
                         "give a `<corpus>/<system>` of an installed egs3 recipe, a module path, or omit "
                         "data_src for the recipe's own dataset/__init__.py") from None


def _test_entries(inference: RoleConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """The inference config's test sets, each as (upstream's name: its ``${inference_dir}/<name>/``,
    the run's split: ``exp_dir/infer/<split>/``, the entry). The split is the name, but for ``train``
    and ``valid``, the training splits' names (statistics, shapes) in a train.yaml: ``<name>_test``."""
    entries = []
    for index, entry in enumerate(plain((inference.values.get("dataset") or {}).get("test")) or []):
        name = str(entry.get("name") or entry.get("data_src") or f"test{index}")
        entries.append((name, f"{name}_test" if name in ("train", "valid") else name, entry))
    return entries


def test_splits(inference: RoleConfig) -> dict[str, str]:
    """Upstream's test set name -> the run's split (:func:`_test_entries`)."""
    return {name: split for name, split, _ in _test_entries(inference)}


def _data(training: RoleConfig, recipe_dir: Path, inference: RoleConfig | None) -> dict[str, Any]:
    dataset = training.values.get("dataset") or {}
    data: dict[str, Any] = {
        split: _entries(training, f"dataset.{split}", dataset.get(split), recipe_dir) for split in ("train", "valid")
    }
    tests = _test_entries(inference) if inference is not None else []
    if tests:
        data["test"] = {split: _entries(inference, f"dataset.test[{index}]", [entry], recipe_dir)
                        for index, (_, split, entry) in enumerate(tests)}
    tokenizer = training.values.get("tokenizer") or {}
    preprocessor = dataset.get("preprocessor") or {}
    if not tokenizer.get("save_path") and preprocessor.get("token_list"):
        # No tokenizer stage (characters, phonemes): the preprocessor's list is the run's.
        data["token_list"] = _absolute(preprocessor["token_list"])
        data["token_type"] = str(preprocessor.get("token_type") or "char")
    elif tokenizer.get("save_path"):
        data["token_list"] = _absolute(Path(str(tokenizer["save_path"])) / "tokens.txt")
        data["bpemodel"] = _absolute(Path(str(tokenizer["save_path"])) / "bpe.model")
        data["token_type"] = "bpe"
        data["nbpe"] = int(tokenizer.get("vocab_size") or 30)
    return data


SPLIT_PREPROCESSORS = "espnet3.components.data.split_preprocessor.SplitPreprocessors"


def _preprocessor(training: RoleConfig, block: Any) -> dict[str, Any]:
    """The shared block, or upstream's per-split blocks (each merged over the shared keys; valid
    defaults to train's, test to valid's) as one :class:`SplitPreprocessors` block."""
    block = dict(plain(block))
    splits = {k: block.pop(k) for k in ("train", "valid", "test") if isinstance(block.get(k), Mapping)}
    if not splits:
        return _split_block(training, "dataset.preprocessor", block)
    if "train" not in splits:
        raise training.error("dataset.preprocessor.train", "missing beside the other splits' blocks",
                             "give the training split's block (upstream would train without a preprocessor)")
    merged = {split: {**block, **splits[split]} for split in splits}
    valid = merged.get("valid", merged["train"])
    if merged.get("test", valid) != valid:
        raise training.error("dataset.preprocessor.test", "differs from the valid block; the workers prepare "
                             "valid and test sets alike", "drop the test block, or make it the valid block")
    return {"_target_": SPLIT_PREPROCESSORS, "_recursive_": False,
            "train_preprocessor": _split_block(training, "dataset.preprocessor.train", merged["train"]),
            "eval_preprocessor": _split_block(training, "dataset.preprocessor.valid", valid)}


def _split_block(training: RoleConfig, key: str, block: dict[str, Any]) -> dict[str, Any]:
    if "_target_" not in block:
        raise training.error(key, "has no `_target_`",
                             "name the preprocessor class, e.g. espnet2.train.preprocessor.CommonPreprocessor")
    block.pop("train", None)  # set per split, as upstream's organizer does
    for name in ("token_list", "bpemodel"):
        if isinstance(block.get(name), str):
            block[name] = _absolute(block[name])
    return block


def _dataloader(training: RoleConfig) -> dict[str, Any]:
    loader = training.values.get("dataloader") or {}
    batches = ((loader.get("train") or {}).get("iter_factory") or {}).get("batches") or {}
    kind = str(batches.get("type") or "unsorted")
    out: dict[str, Any] = {"batch_type": kind}
    if batches.get("batch_size") is not None:
        out["batch_size"] = int(batches["batch_size"])
    if batches.get("batch_bins") is not None:
        out["batch_bins"] = int(batches["batch_bins"])
    return out


def _trainer(training: RoleConfig) -> dict[str, Any]:
    trainer = dict(plain(training.values.get("trainer")) or {})
    strategy = trainer.get("strategy")
    if strategy not in (None, "auto", "ddp"):
        raise training.error("trainer.strategy", f"{strategy!r}: Ray Train runs DDP here (FSDP with `fsdp`)",
                             "use `auto` or `ddp`")
    for key in PLACED_BY_RAY:
        trainer.pop(key, None)
    return trainer


def _inference(inference: RoleConfig, task: str | None) -> dict[str, Any]:
    inference.check_keys(INFERENCE_KEYS)
    model = dict(plain(inference.values.get("model")) or {})
    target = model.pop("_target_", None)
    if target not in INFERENCE_CLASSES:
        raise inference.error("model._target_", f"{target!r} is not an inference class this front end decodes with",
                              f"use one of {', '.join(INFERENCE_CLASSES)}")
    if task:
        decoder = system_for(resolve_task(task)).inference_class()
        if target != decoder.espnet2_class:
            raise inference.error("model._target_", f"{target} cannot load the models of the training config's "
                                  f"task {task}", f"use {decoder.espnet2_class} (e.g. the recipe's inference config "
                                  "for that model family, such as mini_an4's conf/inference_transducer.yaml)")
        _check_output_keys(inference, decoder)
        _check_input_key(inference, decoder)
    if inference.values.get("output_fn") is not None:
        raise inference.error("output_fn", "upstream's legacy output hook is not run here: the model family's "
                              "decoder writes ESPnet2's outputs (text, token, ... for ASR)",
                              "remove output_fn; choose the outputs written with output_keys")
    config_key, model_key = INFERENCE_CLASSES[target]
    model.pop(config_key, None)  # always the run's exp_dir/config.yaml
    model_file = model.pop(model_key, None)
    if model_file:
        model["model_file"] = _absolute(model_file)
    if inference.values.get("batch_size") is not None:
        model["batch_size"] = int(inference.values["batch_size"])
    return model


def output_keys(inference: RoleConfig) -> tuple[str, ...] | None:
    """Upstream's ``output_keys``: the only outputs written as ``${inference_dir}/<test>/<key>.scp``
    (None: every output the decoder writes)."""
    keys = plain(inference.values.get("output_keys"))
    if keys is None:
        return None
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise inference.error("output_keys", f"{keys!r} is not a list of output names",
                              "give a list, e.g. output_keys: [text]")
    return tuple(keys)


def _check_output_keys(inference: RoleConfig, decoder: type) -> None:
    keys = output_keys(inference)
    written = [output.name.removesuffix(".scp") for output in decoder.outputs]
    for key in keys or ():
        if key not in written:
            raise inference.error("output_keys", f"{key!r} is not an output of {decoder.espnet2_class}",
                                  f"use some of {', '.join(written)}, or drop output_keys to write them all")


def _check_input_key(inference: RoleConfig, decoder: type) -> None:
    """Upstream passes the dataset fields ``input_key`` names to the model; here the family's decoder
    reads its own (``speech`` for ASR), so another choice would be silently ignored."""
    key = plain(inference.values.get("input_key"))
    reads = getattr(decoder, "input_name", None)
    if key is None or reads is None:
        return
    if (key if isinstance(key, list) else [key]) != [reads]:
        raise inference.error("input_key", f"{decoder.espnet2_class} decodes the dataset field {reads!r}, "
                              f"not {key!r}", f"set input_key: {reads}, or remove it")


def _metrics(metrics: RoleConfig) -> list[dict[str, Any]]:
    metrics.check_keys(METRICS_KEYS)
    out = []
    for index, entry in enumerate(plain(metrics.values.get("metrics")) or []):
        block = dict(entry.get("metric") or {})
        target = block.pop("_target_", None)
        if target not in METRICS:
            raise metrics.error(f"metrics[{index}].metric._target_", f"{target!r} is not a metric this front end has",
                                f"use one of {', '.join(METRICS)}")
        inputs = {f"{role}_key": source for role, source in (entry.get("inputs") or {}).items()}
        out.append({"_target_": METRICS[target], **block, **inputs})
    return out
