"""Build the model a train.yaml describes: an ESPnet2 task's model, or any class by ``_target_``.

``get_espnet_model`` is the one entry point for ESPnet2 task models; the trainer, the
export code and users all go through it so that a model block means the same thing
everywhere (including in the ``config.yaml`` handed to ESPnet2's inference tools).
"""

from __future__ import annotations

import argparse
import copy
import difflib
import functools
import importlib
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from omegaconf import DictConfig, OmegaConf

from espnet3.systems.tasks import TASKS
from espnet3.utils.espnet2_imports import import_espnet2
from espnet3.utils.code_dir import make_importable
from espnet3.utils.instantiate import instantiate

# Applied by the Lightning module after the model is built; ESPnet2 tasks do not know it.
FREEZE_PARAM_KEY = "freeze_param"
# spk.sh / lid.sh pass the number of classes as the line count of the class -> utterances file.
CLASS_COUNTS = {"spk_num": "spk2utt", "lang_num": "lang2utt"}


def resolve_task(task: str | type) -> type:
    """Turn a recipe name (``asr1``) or dotted class path into an ESPnet2 task class.

    Raises:
        ValueError: for an unknown name, or a task whose module cannot be imported here
            (a newer espnet release or an optional dependency is missing).
        TypeError: when the class is not an ESPnet2 task.
    """
    if isinstance(task, type):
        return _check_task_class(task, task.__name__)
    if not isinstance(task, str) or not task:
        raise TypeError(f"`task` must be a recipe name or a dotted class path, got {task!r}")
    if task in TASKS:
        dotted = TASKS[task]
    elif "." in task:
        dotted = task
    else:
        close = difflib.get_close_matches(task, list(TASKS), n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise ValueError(
            f"`task: {task}` is not a known recipe name{hint}. Valid names: "
            f"{', '.join(sorted(TASKS))}; or give a dotted class path such as "
            "espnet2.tasks.asr.ASRTask."
        )
    module_name, _, class_name = dotted.rpartition(".")
    try:
        if module_name.split(".")[0] in ("espnet", "espnet2"):
            module = import_espnet2(module_name)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, OSError, RuntimeError) as exc:
        raise ValueError(
            f"`task: {task}` needs {dotted}, but {module_name} cannot be imported here "
            f"({type(exc).__name__}: {exc}). Install the espnet release or the optional "
            "packages that provide it, or pick another task."
        ) from None
    if not hasattr(module, class_name):
        raise ValueError(f"`task: {task}`: module {module_name} has no class {class_name}.")
    return _check_task_class(getattr(module, class_name), task)


def _check_task_class(cls: Any, task: str) -> type:
    if not (isinstance(cls, type) and hasattr(cls, "get_default_config") and hasattr(cls, "build_model")):
        raise TypeError(
            f"`task: {task}` resolves to {cls!r}, which is not an ESPnet2 task "
            "(a class with get_default_config and build_model)."
        )
    return cls


@functools.lru_cache(maxsize=None)
def _parser(task_cls: type):
    # get_parser reads sys.argv for its defaults; pytest's or the launcher's flags would leak in.
    with mock.patch.object(sys, "argv", ["espnet3"]):
        return task_cls.get_parser()


@functools.lru_cache(maxsize=None)
def _default_config(task_cls: type) -> dict[str, Any]:
    """What ESPnet2's training entry point gets for options a config leaves out: the parser defaults.

    Not ``get_default_config()``: that one fills every ``<choice>_conf`` and ``model_conf`` with
    the class signature's defaults (for ``--print_config``), which then collide with the keyword
    arguments ``build_model`` passes itself (MT's ``src_vocab_size``, ST's preprocessor ``text_name``).
    """
    parser = _parser(task_cls)
    return {a.dest: parser.get_default(a.dest) for a in parser._actions if a.dest not in ("help", "config")}


def default_config(task_cls: type) -> dict[str, Any]:
    """The task's full ESPnet2 default config (a fresh copy)."""
    return copy.deepcopy(_default_config(task_cls))


@functools.lru_cache(maxsize=None)
def _group_keys(task_cls: type, description: str) -> tuple[str, ...]:
    parser = _parser(task_cls)
    choices = {c.name for c in task_cls.class_choices_list}
    choices |= {f"{name}_conf" for name in choices}
    keys = (
        action.dest
        for group in parser._action_groups
        # espnet <= 202511 named its groups by `description`, 202609 and later by `title`; some
        # tasks end the name with a period (asr_transducer's "Task related.").
        if description in {(name or "").rstrip(".") for name in (group.title, group.description)}
        for action in group._group_actions
    )
    return tuple(k for k in keys if k not in choices)


# Preprocessing options ESPnet2 tasks add outside their "Preprocess related" group.
UNGROUPED_PREPROCESS_KEYS = (
    "non_linguistic_symbols", "cleaner", "g2p", "src_g2p", "tokenizer_encode_conf", "src_tokenizer_encode_conf",
)
# The class choice of the task's AbsPreprocessor (asr, enh, st, spk, lid, ...).
PREPROCESSOR_CHOICE = "preprocessor"


def _choice_names(task_cls: type) -> set[str]:
    return {c.name for c in task_cls.class_choices_list}


@functools.lru_cache(maxsize=None)
def preprocess_keys(task_cls: type) -> tuple[str, ...]:
    """Every key a train.yaml ``preprocessor:`` block may hold for this task.

    The task's "Preprocess related" options (token_type, cleaner, g2p, rir_scp, ...), the ones
    ESPnet2 adds outside that group, the token lists the preprocessor tokenizes with
    (``token_list``, ``src_token_list``, ...) and the ``preprocessor``/``preprocessor_conf``
    class choice.
    """
    known = set(_default_config(task_cls))
    keys = list(_group_keys(task_cls, "Preprocess related"))
    keys += [k for k in UNGROUPED_PREPROCESS_KEYS if k in known]
    keys += [k for k in known if k.endswith("token_list")]
    if PREPROCESSOR_CHOICE in _choice_names(task_cls):
        keys += [PREPROCESSOR_CHOICE, f"{PREPROCESSOR_CHOICE}_conf"]
    return tuple(dict.fromkeys(keys))


@functools.lru_cache(maxsize=None)
def model_keys(task_cls: type) -> tuple[str, ...]:
    """The options that define an ESPnet2 task's network: its task options and class choices.

    ESPnet2 puts these in the argument groups each task adds itself; the rest of its
    parser (trainer, batching, distributed) is espnet3's business, not the model's, and
    the preprocessor class choice belongs to the ``preprocessor:`` block.
    """
    keys = list(_group_keys(task_cls, "Task related"))
    for choices in task_cls.class_choices_list:
        if choices.name != PREPROCESSOR_CHOICE:
            keys += [choices.name, f"{choices.name}_conf"]
    known = set(_default_config(task_cls))
    return tuple(dict.fromkeys(k for k in keys if k in known))


def _to_plain(block: Mapping[str, Any] | DictConfig | None, what: str) -> dict[str, Any]:
    if block is None:
        return {}
    if isinstance(block, DictConfig):
        return OmegaConf.to_container(block, resolve=True)
    if isinstance(block, Mapping):
        return copy.deepcopy(dict(block))
    raise TypeError(f"the {what} block must be a mapping, got {type(block).__name__}")


def _read_token_list(key: str, token_list: Any) -> list[str] | None:
    if token_list is None or isinstance(token_list, list):
        return token_list
    if isinstance(token_list, (str, Path)):
        path = Path(token_list)
        if not path.is_file():
            raise ValueError(
                f"`{key}` is {str(token_list)!r}, which is not a file. Let the launcher write it from "
                "the training text (`data.token_list`), or give the tokens as a YAML list."
            )
        with path.open(encoding="utf-8") as f:
            tokens = [line.rstrip() for line in f]
        while tokens and not tokens[-1]:
            tokens.pop()
        return tokens
    raise TypeError(f"`{key}` must be a file path or a list, got {token_list!r}")


def _count_lines(key: str, path: Any) -> int:
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    except OSError as err:
        raise ValueError(f"`{key}` is {str(path)!r}, which cannot be read ({err.strerror or err}); "
                         "give the class -> utterances file the recipe script writes (utils/utt2spk_to_spk2utt.pl)"
                         ) from None


def check_task_blocks(
    task: str | type,
    model_config: Mapping[str, Any] | DictConfig | None,
    preprocessor_config: Mapping[str, Any] | DictConfig | None = None,
) -> type:
    """Check the keys of the ``model:`` and ``preprocessor:`` blocks against the task; return the task class.

    Only keys: nothing is read from disk, so this runs before any data exists.
    """
    task_cls = resolve_task(task)
    where = f"{task_cls.__module__}.{task_cls.__name__}"
    network, preprocess = model_keys(task_cls), preprocess_keys(task_cls)
    model = _to_plain(model_config, "model")
    model.pop(FREEZE_PARAM_KEY, None)
    for key in model:
        if key in network:
            continue
        if key in preprocess:
            raise ValueError(
                f"`model.{key}` is a preprocessing option of {where}; move it to the `preprocessor:` "
                f"block (`preprocessor.{key}`)."
            )
        close = difflib.get_close_matches(str(key), network, n=1)
        hint = f" Did you mean `model.{close[0]}`?" if close else ""
        raise ValueError(
            f"`model.{key}` is not a model option of {where}.{hint} Valid keys: {', '.join(network)}."
        )
    preprocessor = _to_plain(preprocessor_config, "preprocessor")
    if "_target_" in preprocessor:
        return task_cls
    for key in preprocessor:
        if key in preprocess:
            continue
        close = difflib.get_close_matches(str(key), preprocess, n=1)
        hint = f" Did you mean `preprocessor.{close[0]}`?" if close else ""
        raise ValueError(
            f"`preprocessor.{key}` is not a preprocessing option of {where}.{hint} Valid keys: "
            f"{', '.join(preprocess)} (or `_target_` for an AbsPreprocessor class)."
        )
    for key in set(model) & set(preprocessor):
        if model[key] != preprocessor[key]:
            raise ValueError(
                f"`model.{key}` ({model[key]!r}) and `preprocessor.{key}` ({preprocessor[key]!r}) differ; "
                "set it in one place."
            )
    _check_class_choices(task_cls, {"model": model, "preprocessor": preprocessor})
    return task_cls


def _check_class_choices(task_cls: type, blocks: Mapping[str, Mapping[str, Any]]) -> None:
    """Each class choice (``encoder: conformer``) is one of the task's, and its ``_conf`` fits its class.

    ESPnet2 checks both only when it builds the model; here a typo is named with the closest
    valid choice, and an unknown keyword with the class it is not an argument of.
    """
    for choices in task_cls.class_choices_list:
        for block_name, block in blocks.items():
            if choices.name not in block and f"{choices.name}_conf" not in block:
                continue
            value = block.get(choices.name, choices.default)
            key = f"{block_name}.{choices.name}"
            if isinstance(value, str) and value.lower() == "none":
                value = None
            valid = [c for c in choices.choices() if c is not None]
            if value is None:
                continue  # ESPnet2's builders take None (no frontend: features as input)
            if not isinstance(value, str) or value.lower() not in choices.classes:
                close = difflib.get_close_matches(str(value).lower(), valid, n=1)
                hint = f" Did you mean `{close[0]}`?" if close else ""
                raise ValueError(f"`{key}: {value}` is not a {choices.name} of {task_cls.__name__}.{hint} "
                                 f"Valid: {', '.join(valid)}.")
            conf = block.get(f"{choices.name}_conf") or {}
            cls = choices.get_class(value)
            try:
                inspect.signature(cls).bind_partial(**conf)
            except TypeError as err:
                raise ValueError(
                    f"`{key}_conf` does not fit {cls.__module__}.{cls.__name__} ({err}); use its arguments: "
                    f"{', '.join(p for p in inspect.signature(cls).parameters if p not in ('self', 'args', 'kwargs'))}."
                ) from None


def task_args(
    task: str | type,
    model_config: Mapping[str, Any] | DictConfig | None,
    preprocessor_config: Mapping[str, Any] | DictConfig | None = None,
    preprocessor_defaults: Mapping[str, Any] | None = None,
    read_token_lists: bool = True,
) -> dict[str, Any]:
    """The ESPnet2 ``args`` of a run: the task's defaults updated with both blocks.

    ESPnet2 builds the model, the preprocessor and the collate function from one
    Namespace; so does espnet3. ``preprocessor_defaults`` (from ``data.token_*``) fill
    preprocessing options neither block sets. ESPnet2 spellings are normalised on the
    way: ``"none"`` means None, token lists may be files (read here unless
    ``read_token_lists`` is false: before they are written), ``freeze_param`` is dropped
    (the Lightning module applies it).
    """
    task_cls = check_task_blocks(task, model_config, preprocessor_config)
    model = _to_plain(model_config, "model")
    preprocessor = _to_plain(preprocessor_config, "preprocessor")
    block = {k: v for k, v in (preprocessor_defaults or {}).items() if k in preprocess_keys(task_cls)}
    block.update(model)
    if "_target_" not in preprocessor:
        block.update(preprocessor)
    block.pop(FREEZE_PARAM_KEY, None)
    for key, value in block.items():
        if isinstance(value, str) and value.lower() == "none":
            block[key] = None
    for key in [k for k in block if k.endswith("token_list") and read_token_lists]:
        block[key] = _read_token_list(f"model.{key}" if key in model else f"preprocessor.{key}", block[key])
    for count, listing in CLASS_COUNTS.items():
        if block.get(count) is None and block.get(listing) and read_token_lists:
            block[count] = _count_lines(f"model.{listing}", block[listing])

    args = default_config(task_cls)
    for name in _choice_names(task_cls):
        # The default `<name>_conf` holds the default class's kwargs; handing them to the
        # class the user picked instead would fail with an unexpected-keyword error.
        if name in block and block[name] != args.get(name) and f"{name}_conf" not in block:
            block[f"{name}_conf"] = {}
    args.update(block)
    return args


def get_espnet_model(
    task: str | type,
    model_config: Mapping[str, Any] | DictConfig,
    preprocessor_config: Mapping[str, Any] | DictConfig | None = None,
) -> torch.nn.Module:
    """Build an ESPnet2 task's model from a train.yaml model block.

    Args:
        task: recipe name (``asr1``) or dotted task class path
            (``espnet2.tasks.asr.ASRTask``, ``espnet3.systems.asr.task.ASRTask``).
        model_config: the ``model`` block; not modified.
        preprocessor_config: the ``preprocessor`` block, part of the same ESPnet2 args.
    """
    return build_task_model(task, task_args(task, model_config, preprocessor_config))


def build_task_model(task: str | type, args: Mapping[str, Any]) -> torch.nn.Module:
    """``Task.build_model`` from complete ESPnet2 args (:func:`task_args`, or a data plan's); not modified."""
    return resolve_task(task).build_model(argparse.Namespace(**copy.deepcopy(dict(args))))


def build_model(cfg: DictConfig, config_dir: str | Path | None = None, plan: Any = None) -> torch.nn.Module:
    """Build the model of a loaded train.yaml: by ``task``, or by ``model._target_``.

    Args:
        cfg: a config from :func:`espnet3.config.load_config` (not modified).
        config_dir: directory of the config file; made importable first so recipe-local
            classes resolve. ``None`` leaves ``sys.path`` alone.
        plan: the run's :class:`espnet3.data.plan.DataPlan`, whose ESPnet2 args (with the token
            lists and token settings of ``data:``) build a task model as its data was prepared.
    """
    if config_dir is not None:
        make_importable(config_dir)
    if cfg.get("task"):
        if plan is not None:
            return build_task_model(plan.preprocess.task, plan.preprocess.args)
        return get_espnet_model(cfg.task, cfg.model, cfg.get("preprocessor"))
    return instantiate_model(cfg.model)


def instantiate_model(model_config: Mapping[str, Any] | DictConfig) -> torch.nn.Module:
    """Build a ``model: {_target_: pkg.Class, ...}`` block (minus ``freeze_param``)."""
    block = _to_plain(model_config, "model")
    if "_target_" not in block:
        raise ValueError(
            "Neither `task` nor `model._target_` is set; add `task: asr1` or "
            "`model._target_: pkg.module.Class` to the train.yaml."
        )
    block.pop(FREEZE_PARAM_KEY, None)
    return instantiate(block, _convert_="all")
