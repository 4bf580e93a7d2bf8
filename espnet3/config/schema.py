"""Validation of a merged train.yaml, so that mistakes fail here and not inside a Ray worker.

Only the keys espnet3 itself reads are checked. Blocks handed to other libraries
(``trainer`` to Lightning, ``model`` to ESPnet2 or Hydra, optimizer kwargs) are checked
for shape only: those libraries report their own keyword errors, with better names.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from espnet3.errors import ConfigError


@dataclass(frozen=True)
class FieldSpec:
    """What one key of train.yaml may hold.

    Attributes:
        key: dotted path of the key.
        kind: ``"str"``, ``"int"``, ``"bool"``, ``"number"``, ``"mapping"`` or ``"list"``.
        nullable: whether ``null`` is allowed.
        choices: the allowed values, for enumerations such as ``scheduler_interval``.
        minimum: the smallest allowed number (``0`` is a value like any other: no falsy fallbacks).
    """

    key: str
    kind: str
    nullable: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None

    def check(self, value: Any, source: str | Path | None) -> None:
        if value is _ABSENT:
            if self.nullable:
                return  # deleted (`~key`): the same as null
            raise ConfigError(
                self.key, source, "was deleted, but espnet3 needs it", f"drop the `~{self.key}` override"
            )
        if value is None:
            if self.nullable:
                return
            raise ConfigError(
                self.key, source, "must not be null", f"set `{self.key}` to {_a(self.kind)}"
            )
        if not _is_kind(value, self.kind):
            raise ConfigError(
                self.key,
                source,
                f"expected {_a(self.kind)}, got {type(value).__name__} {value!r}",
                f"set `{self.key}` to {_a(self.kind)}" + (" or null" if self.nullable else ""),
            )
        if self.choices and value not in self.choices:
            raise ConfigError(
                self.key,
                source,
                f"{value!r} is not one of {', '.join(self.choices)}",
                f"set `{self.key}` to one of {', '.join(self.choices)}",
            )
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(
                self.key, source, f"{value!r} is below {self.minimum:g}", f"set `{self.key}` to {self.minimum:g} or more"
            )


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "int" else f"a {kind}"


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "mapping":
        return isinstance(value, Mapping)
    if kind == "list":
        return isinstance(value, list)
    raise TypeError(f"unknown FieldSpec kind {kind!r}")


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("name", "str"),
    FieldSpec("exp_dir", "str"),
    FieldSpec("stats_dir", "str"),
    FieldSpec("seed", "int", minimum=0),
    FieldSpec("task", "str", nullable=True),
    FieldSpec("model", "mapping"),
    FieldSpec("data", "mapping"),
    FieldSpec("data.digits", "mapping", nullable=True),
    FieldSpec("data.synth", "mapping", nullable=True),
    FieldSpec("preprocessor", "mapping", nullable=True),
    FieldSpec("dataloader", "mapping"),
    FieldSpec("optimizer", "mapping", nullable=True),
    FieldSpec("scheduler", "mapping", nullable=True),
    FieldSpec("scheduler_interval", "str", choices=("step", "epoch")),
    FieldSpec("scheduler_monitor", "str", nullable=True),
    FieldSpec("optimizers", "mapping", nullable=True),
    FieldSpec("schedulers", "mapping", nullable=True),
    FieldSpec("max_nan_batches", "int", minimum=1),
    FieldSpec("trainer", "mapping"),
    FieldSpec("best_model_criterion", "list"),
    FieldSpec("best_model_criterion_missing", "str", choices=("error", "warn")),
    FieldSpec("report_every_n_steps", "int", nullable=True, minimum=1),
    FieldSpec("max_failures", "int", minimum=-1),
    FieldSpec("max_preemption_failures", "int", minimum=-1),
    FieldSpec("elastic_resize_monitor_interval_s", "number", minimum=1),
    FieldSpec("timeouts", "mapping"),
    FieldSpec("timeouts.worker_start_s", "number", minimum=1),
    FieldSpec("timeouts.collective_s", "number", minimum=1),
    FieldSpec("timeouts.stall_s", "number", nullable=True, minimum=1),
    FieldSpec("logging", "mapping"),
    FieldSpec("logging.tensorboard", "bool"),
    FieldSpec("logging.wandb", "mapping", nullable=True),
    FieldSpec("callbacks", "list"),
    FieldSpec("loggers", "list"),
    FieldSpec("ema", "mapping", nullable=True),
    FieldSpec("gpu", "mapping"),
    FieldSpec("inference", "mapping"),
    FieldSpec("metrics", "list", nullable=True),
)

# Top-level blocks that must be mappings before merging: OmegaConf cannot merge a
# scalar over a mapping and would otherwise fail with its own, less helpful error.
MAPPING_BLOCKS = tuple(f.key for f in FIELDS if "." not in f.key and f.kind == "mapping")
NULLABLE_BLOCKS = tuple(f.key for f in FIELDS if f.key in MAPPING_BLOCKS and f.nullable)


def check_top_level_keys(
    user: Mapping[str, Any], valid: list[str], source: str | Path | None
) -> None:
    """Reject unknown top-level keys, suggesting the nearest valid one."""
    for key in user:
        if key in valid:
            continue
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        fix = f"did you mean `{close[0]}`?" if close else f"remove it; valid keys: {', '.join(valid)}"
        raise ConfigError(str(key), source, "unknown top-level key", fix)


def check_block_shapes(user: Mapping[str, Any], source: str | Path | None) -> None:
    """Make sure blocks that get merged with the defaults are mappings in the user's file."""
    for key in MAPPING_BLOCKS:
        if key in user and not isinstance(user[key], Mapping):
            if user[key] is None and key in NULLABLE_BLOCKS:
                continue
            raise ConfigError(
                key,
                source,
                f"expected a mapping, got {type(user[key]).__name__} {user[key]!r}",
                f"write `{key}:` as a block of `name: value` entries",
            )


def validate(cfg: DictConfig, source: str | Path | None) -> None:
    """Check a merged config; raises :class:`ConfigError` naming the key, file and fix."""
    missing = sorted(_missing_keys(cfg, source))
    if missing:
        key = missing[0]
        raise ConfigError(
            key,
            source,
            "required key is not set",
            f"set `{key}` in the file or pass `{key}=VALUE` on the command line",
        )
    resolved = _resolved_container(cfg, source)
    for spec in FIELDS:
        value = _lookup(resolved, spec.key)
        spec.check(value, source)
        if value is _ABSENT and "." not in spec.key:
            resolved[spec.key] = None  # a deleted optional block reads as null below
    _check_model(resolved, source)
    _check_optimization(resolved, source)
    _check_best_model_criterion(resolved["best_model_criterion"], source)
    _check_data_sections(resolved, source)
    _check_training(resolved, source)


def _check_training(cfg: Mapping[str, Any], source: str | Path | None) -> None:
    """Parse the training side (criteria, callbacks, loggers, ema, trainer) as the run will.

    Callback and logger classes are imported, from the config file's directory too (a recipe's
    ``src/``), as the workers will.
    """
    from espnet3.orchestration.train_spec import TrainSpec
    from espnet3.utils.code_dir import config_code_dir, make_importable

    if source is not None and Path(source).is_file():
        make_importable(config_code_dir(source))
    try:
        TrainSpec.from_config(cfg)
    except (ValueError, TypeError) as err:
        raise ConfigError.from_spec_error(err, source) from None


def _check_data_sections(cfg: Mapping[str, Any], source: str | Path | None) -> None:
    """Parse ``data:`` and ``dataloader:`` into their specs: the same parser the run uses later."""
    from espnet3.errors import DataError
    from espnet3.data.loader import LoaderSpec
    from espnet3.data.spec import DataSpec

    from espnet3.config.gpu_batches import parse_gpu_block

    loader = dict(cfg["dataloader"] or {})
    gpu = loader.pop("gpu", None)
    try:
        DataSpec.from_config(cfg["data"])
        LoaderSpec.from_config(loader)
    except DataError as err:
        raise DataError(f"{source}: {err}") from None
    if gpu is not None:  # the GPU run's values are checked now too, on any machine
        try:
            LoaderSpec.from_config({**loader, **parse_gpu_block(gpu, source)[0]})
        except DataError as err:
            raise DataError(f"{source}: in `dataloader.gpu`: {err}") from None


def _missing_keys(cfg: DictConfig, source: str | Path | None) -> set[str]:
    try:
        return OmegaConf.missing_keys(cfg)
    except OmegaConfBaseException as exc:
        raise _interpolation_error(exc, source) from None


def _interpolation_error(exc: OmegaConfBaseException, source: str | Path | None) -> ConfigError:
    return ConfigError.from_omegaconf(
        exc,
        source,
        "cannot resolve interpolation",
        "point the ${...} at a key that exists, or set the value directly",
    )


def _resolved_container(cfg: DictConfig, source: str | Path | None) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise _interpolation_error(exc, source) from None


_ABSENT = object()


def _lookup(container: Mapping[str, Any], dotted: str) -> Any:
    """The value at ``dotted``, or ``_ABSENT`` when a ``~key`` override deleted it."""
    node: Any = container
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _check_model(cfg: Mapping[str, Any], source: str | Path | None) -> None:
    has_task = cfg["task"] is not None
    has_target = "_target_" in cfg["model"]
    if has_task and has_target:
        raise ConfigError(
            "task",
            source,
            f"both `task: {cfg['task']}` and `model._target_: {cfg['model']['_target_']}` are set",
            "keep `task` for an ESPnet2 model block, or `model._target_` for a custom class, not both",
        )
    if not has_task and not has_target:
        raise ConfigError(
            "task",
            source,
            "neither `task` nor `model._target_` is set, so the model cannot be built",
            "add `task: asr1` (or another recipe name) or `model._target_: pkg.module.Class`",
        )


def _check_optimization(cfg: Mapping[str, Any], source: str | Path | None) -> None:
    examples = {
        "optimizer": "{_target_: torch.optim.Adam, lr: 0.001}",
        "scheduler": "{_target_: espnet2.schedulers.warmup_lr.WarmupLR, warmup_steps: 25000}",
    }
    for key, example in examples.items():
        block = cfg[key]
        if block is not None and "_target_" not in block:
            raise ConfigError(
                f"{key}._target_",
                source,
                f"`{key}` has no `_target_`",
                f"name the class, e.g. `{key}: {example}`",
            )
    if cfg["optimizers"] is not None and cfg["optimizer"] is not None:
        raise ConfigError(
            "optimizers",
            source,
            "both `optimizer` and `optimizers` are set",
            "use `optimizer`/`scheduler` for one optimizer or `optimizers`/`schedulers` for several, "
            "and set the other pair to null",
        )
    if cfg["schedulers"] is not None and cfg["optimizers"] is None:
        raise ConfigError(
            "schedulers",
            source,
            "`schedulers` is set without `optimizers`",
            "define the optimizers in `optimizers`, or use the single `scheduler` key",
        )
    if cfg["optimizers"] is None and cfg["optimizer"] is None:
        raise ConfigError(
            "optimizer",
            source,
            "no optimizer is configured",
            "set `optimizer: {_target_: torch.optim.Adam, lr: 0.001}` (or `optimizers`)",
        )


def _check_best_model_criterion(criteria: list[Any], source: str | Path | None) -> None:
    example = "[[valid/loss, 3, min]]"
    if not criteria:
        raise ConfigError(
            "best_model_criterion",
            source,
            "is empty",
            f"give at least one [metric, K, min|max] entry, e.g. {example}",
        )
    for i, entry in enumerate(criteria):
        key = f"best_model_criterion[{i}]"
        if isinstance(entry, list) and len(entry) == 3 and all(isinstance(e, str) for e in entry):
            phase, metric, mode = entry
            raise ConfigError(
                key,
                source,
                f"{entry} is ESPnet2's [phase, metric, mode] form",
                f"write [{phase}/{metric}, K, {mode}] with K the number of checkpoints to keep",
            )
        ok = (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and "/" in entry[0]
            and _is_kind(entry[1], "int")
            and entry[1] >= 1
            and entry[2] in ("min", "max")
        )
        if not ok:
            raise ConfigError(
                key,
                source,
                f"{entry!r} is not [metric, K, min|max] with metric like valid/loss and K >= 1",
                f"write it like {example}",
            )
