"""Checks of a loaded train.yaml against the libraries it configures, before any Ray worker starts.

:mod:`espnet3.config.schema` checks the keys espnet3 reads itself; this module checks the blocks
handed to other libraries, by asking those libraries: the ``trainer:`` block against
``lightning.Trainer``'s signature and annotations, the optimizer and scheduler ``_target_``s by
building them on a dummy parameter (so a typo in a class name, an unknown keyword and a
negative learning rate all fail here), the model block against the ESPnet2 task or the
``_target_`` class. Every problem becomes a :class:`ConfigError` naming the key, the file and
the fix; a minute of Ray start-up and a traceback in a worker log is what this saves.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from espnet3.errors import ConfigError

def check_trainer(trainer: Mapping[str, Any], source: str | Path | None) -> None:
    """Every ``trainer.<key>`` is a ``lightning.Trainer`` argument of the annotated type.

    (Keys espnet3 sets itself, and ``strategy``, are :class:`TrainSpec`'s, checked at load time.)
    """
    import typing

    import lightning as L
    from typeguard import TypeCheckError, check_type

    from espnet3.orchestration.train_spec import RESERVED_TRAINER_KEYS

    parameters = inspect.signature(L.Trainer.__init__).parameters
    hints = typing.get_type_hints(L.Trainer.__init__)
    valid = [name for name in parameters if name != "self" and name not in RESERVED_TRAINER_KEYS]
    for key, value in trainer.items():
        where = f"trainer.{key}"
        if key == "strategy" or key in RESERVED_TRAINER_KEYS:
            continue  # checked by TrainSpec when the config is loaded (espnet3 maps strategies to Ray's)
        if key not in parameters:
            close = difflib.get_close_matches(key, valid, n=1)
            raise ConfigError(
                where, source, "is not an argument of lightning.Trainer",
                f"did you mean `trainer.{close[0]}`?" if close else f"use one of {', '.join(valid)}",
            )
        if key in hints:
            try:
                check_type(value, hints[key])
            except TypeCheckError:
                expected = describe_type(hints[key])
                raise ConfigError(
                    where, source, f"{value!r} is not a valid value (lightning.Trainer expects {expected})",
                    f"set `{where}` to {expected}",
                ) from None


def describe_type(hint: Any) -> str:
    """A type annotation in words: ``Optional[int]`` -> ``an integer or null``."""
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        parts = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(parts + (["null"] if type(None) in args else [])))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
             list: "a list"}
    return names.get(origin or hint, getattr(origin or hint, "__name__", str(hint)))


def _dummy_parameters():
    import torch

    return [torch.nn.Parameter(torch.zeros(1))]


def check_optimization(cfg: Mapping[str, Any], source: str | Path | None) -> None:
    """Build every optimizer and scheduler on a dummy parameter: their classes and kwargs as the run will."""
    from espnet3.components.modeling.optimization_spec import OptimizationPlan
    from espnet3.utils.instantiate import instantiate

    try:
        plan = OptimizationPlan.from_config(cfg)
    except (ValueError, TypeError) as err:
        raise ConfigError("optimizers" if cfg.get("optimizers") else "optimizer", source, str(err),
                          "see docs/train_yaml.md") from None
    for name, spec in plan.optimizers.items():
        key = "optimizer" if not plan.multi else f"optimizers.{name}.optimizer"
        optimizer = _build(key, source, lambda: instantiate(spec.optimizer, params=_dummy_parameters()))
        scheduler = plan.schedulers.get(name)
        if scheduler is not None:
            skey = "scheduler" if not plan.multi else f"schedulers.{name}.scheduler"
            _build(skey, source, lambda: instantiate(scheduler.scheduler, optimizer=optimizer))


def _build(key: str, source: str | Path | None, build) -> Any:
    try:
        return build()
    except Exception as err:  # noqa: BLE001 - any failure to build it is the config's
        cause = err.__cause__ or err
        raise ConfigError(
            key, source, f"cannot be built ({type(cause).__name__}: {cause})",
            "fix its `_target_` (an importable class) and its keyword arguments",
        ) from None


def check_model(cfg: Mapping[str, Any], source: str | Path | None) -> None:
    """The model block against the ESPnet2 task (keys, class choices and their kwargs) or the class."""
    if cfg.get("task"):
        from espnet3.utils.task_utils import check_task_blocks, resolve_task

        try:
            resolve_task(cfg["task"])
        except (ValueError, TypeError) as err:
            raise ConfigError("task", source, str(err), "pick a recipe name listed above") from None
        try:
            check_task_blocks(cfg["task"], cfg.get("model"), cfg.get("preprocessor"))
        except (ValueError, TypeError) as err:
            raise ConfigError(_key_in(str(err), "model"), source, str(err), None) from None
        return
    _check_target(cfg["model"], "model", source)


def _check_target(block: Mapping[str, Any], key: str, source: str | Path | None) -> None:
    """``_target_`` importable and its keyword arguments accepted by its signature."""
    from espnet3.utils.instantiate import import_dotted

    target = block["_target_"]
    try:
        cls = import_dotted(target)
    except (ImportError, ValueError) as err:
        raise ConfigError(f"{key}._target_", source, f"{target!r} cannot be imported ({err})",
                          "name an importable class (the config's directory is importable: src.my_model.MyModel)") from None
    kwargs = {k: v for k, v in block.items() if not k.startswith("_") and k != "freeze_param"}
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise ConfigError(key, source, f"{target}({', '.join(kwargs)}): {err}",
                          f"give {target} the arguments its signature takes") from None
    except ValueError:
        pass  # no introspectable signature (a C extension): the build on the driver checks it


def _key_in(message: str, default: str) -> str:
    """The backquoted config key a message names first (`model.encoder_conf`), else ``default``."""
    found = re.search(r"`((?:model|preprocessor|inference)\.[\w.]+)[`:]", message)
    return found.group(1) if found else default


def check_evaluation(cfg: Mapping[str, Any], averaged_model: Path, source: str | Path | None):
    """The ``inference:`` options against the task's decoder and the ``metrics:`` blocks; returns the plan."""
    from espnet3.stages.evaluation import EvaluationPlan

    try:
        return EvaluationPlan.from_config(cfg, averaged_model)
    except (ValueError, TypeError) as err:
        key = "metrics" if str(err).startswith("`metrics") else _key_in(str(err), "inference")
        raise ConfigError(key, source, str(err), None) from None


def check_config(cfg: Mapping[str, Any], source: str | Path | None) -> None:
    """Every check of this module (the resolved config as plain containers)."""
    check_trainer(cfg.get("trainer") or {}, source)
    check_optimization(cfg, source)
    check_model(cfg, source)
    check_gpu_options(cfg, source)


def check_gpu_options(cfg: Mapping[str, Any], source: str | Path | None) -> None:
    """``gpu:`` is parsed on every run, so a typo is found before the GPU run that needs it."""
    from espnet3.components.gpu import GPUOptions

    try:
        GPUOptions.from_config(cfg.get("gpu"))
    except ValueError as err:
        raise ConfigError.from_spec_error(err, source) from None


def check_trainable(cfg: Mapping[str, Any], model_factory, source: str | Path | None):
    """Build the model and its Lightning module with its optimizers, as every worker will; return the module.

    What only building shows (a wrong keyword deep in a model, a ``freeze_param`` or
    ``optimizers.<name>.params`` prefix that selects nothing) fails here, once, on the driver.
    """
    from espnet3.components.modeling.lightning_module import ESPnetLightningModule

    try:
        model = model_factory()
    except Exception as err:  # noqa: BLE001 - a model that cannot be built is the config's problem
        raise ConfigError("model", source, f"cannot be built ({type(err).__name__}: {err})",
                          "fix the model block (its classes and their keyword arguments)") from None
    try:
        module = ESPnetLightningModule(model, cfg)
        module.configure_optimizers()
    except (ValueError, TypeError, KeyError) as err:
        message = str(err).strip("'\"")
        raise ConfigError(_config_key(message), source, message, None) from None
    return module


def settle_criteria(cfg, module, plan, source: str | Path | None) -> bool:
    """:func:`check_criteria` on two real utterances of the valid split; the criteria the run
    uses are written back into ``cfg`` (a ``DictConfig``), so the saved config shows them.
    Returns whether they changed."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    try:
        logged = module.logged_metrics(plan.sample_batch("valid"))
    except SystemExit:  # ESPnet2 models exit() when an optional loss package is missing
        raise ConfigError("model", source, "exited while computing its loss on two valid utterances",
                          "see the line the model logged above (e.g. a package it needs that is not installed)"
                          ) from None
    criteria = check_criteria(plain, logged, source)
    if criteria == plain["best_model_criterion"]:
        return False
    cfg.best_model_criterion = criteria
    return True


def check_criteria(cfg: Mapping[str, Any], logged: set[str], source: str | Path | None) -> list[list[Any]]:
    """Every ``best_model_criterion`` metric against what the run will report; returns the criteria to use.

    ``logged``: the keys the model logs (:meth:`ESPnetLightningModule.logged_metrics` on a real
    batch); ESPnet2's counters (``train/total_count``, ...) are always reported. A criterion the
    model does not log fails here, before Ray, with the ones it does log. With
    ``best_model_criterion_missing: warn`` (what :mod:`espnet3.from_espnet2` writes) it is dropped
    with a warning instead, as ESPnet2's trainer goes on without it; where that leaves none, the run
    keeps the latest checkpoints (``train/total_count``), ESPnet2's GAN recipes' choice.
    """
    from espnet3.orchestration.counters import counter_metrics

    available = set(logged) | set(counter_metrics())
    criteria = [list(entry) for entry in cfg["best_model_criterion"]]
    missing = [(i, entry) for i, entry in enumerate(criteria) if entry[0] not in available]
    if not missing:
        return criteria
    listed = ", ".join(sorted(available))
    if cfg.get("best_model_criterion_missing", "error") != "warn":
        i, (metric, _, _) = missing[0]
        raise ConfigError(
            f"best_model_criterion[{i}]", source, f"ranks by {metric}, which the model does not log (it logs: {listed})",
            "rank by one of those, or set `best_model_criterion_missing: warn` to drop it as ESPnet2's trainer does",
        )
    kept = [entry for entry in criteria if entry[0] in available]
    if not kept:
        kept = [["train/total_count", max(entry[1] for entry in criteria), "max"]]
    for _, (metric, _, _) in missing:
        print(f"[espnet3] warning: best_model_criterion ranks by {metric}, which the model does not log; "
              f"dropped (best_model_criterion_missing: warn). It logs: {listed}", flush=True)
    print(f"[espnet3] best_model_criterion: {kept}", flush=True)
    return kept


def _config_key(message: str) -> str:
    """The backquoted config key a module error names first (`optimizers.gen.params`), else ``optimizers``."""
    found = re.search(r"`((?:model|optimizers|schedulers|optimizer|scheduler)[\w.<>]*)`", message)
    return found.group(1) if found else "optimizers"
