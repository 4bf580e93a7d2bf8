"""The ``space:`` block of a sweep file: dotted train.yaml paths mapped to distributions.

A sampled value reaches the train config as a Hydra-style override (``optimizer.lr=0.001``)
through the same machinery as the command line, so a trial's config is checked exactly
like a hand-written one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from espnet3.errors import ConfigError
from espnet3.config.overrides import apply_overrides, has_key
from espnet3.config.schema import validate
from espnet3.errors import SweepError

# What each distribution's list means, shown in error messages.
DISTRIBUTIONS = {
    "choice": "[v1, v2, ...] sampled uniformly",
    "grid": "[v1, v2, ...] every value, times num_samples",
    "uniform": "[low, high] floats",
    "loguniform": "[low, high] floats, low > 0, sampled on a log scale",
    "randint": "[low, high] integers with low <= x < high",
}

# Keys prepared once for the whole sweep (corpus, token list, feature statistics) or
# set per trial by the sweep itself: searching them would give trials stale artefacts.
FIXED_PREFIXES = ("name", "exp_dir", "stats_dir", "data", "preprocessor")


@dataclass(frozen=True)
class Dimension:
    """One searched train.yaml key.

    Attributes:
        path: dotted train.yaml path, without the ``+``.
        kind: one of :data:`DISTRIBUTIONS`.
        values: the choices (``choice``/``grid``) or the bounds (ranges).
        add: written as ``+path``: the key is new to the base config.
    """

    path: str
    kind: str
    values: tuple
    add: bool = False

    @classmethod
    def parse(cls, key: str, raw: Any, source: Path) -> Dimension:
        where = f"space.{key}"
        forms = "; ".join(f"{{{k}: {v}}}" for k, v in DISTRIBUTIONS.items())
        if not (isinstance(raw, Mapping) and len(raw) == 1):
            raise SweepError(where, source, f"expected one {{distribution: values}} entry, got {raw!r}", f"write one of {forms}")
        ((kind, values),) = raw.items()
        if kind not in DISTRIBUTIONS:
            raise SweepError(where, source, f"unknown distribution `{kind}`", f"use one of {forms}")
        if not isinstance(values, list) or not values:
            raise SweepError(where, source, f"`{kind}` needs a non-empty list, got {values!r}", f"write {{{kind}: {DISTRIBUTIONS[kind]}}}")
        if kind in ("uniform", "loguniform", "randint"):
            _check_bounds(where, kind, values, source)
        return cls(path=key.lstrip("+"), kind=kind, values=tuple(values), add=key.startswith("+"))

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        return getattr(tune, self.kind)(*self.values) if self.kind != "choice" else tune.choice(list(self.values))

    def representatives(self) -> tuple:
        """Values that stand for everything this dimension can sample, for up-front checks."""
        if self.kind == "randint":
            return (self.values[0], self.values[1] - 1)
        return self.values

    def override(self, value: Any) -> str:
        return f"{'+' if self.add else ''}{self.path}={hydra_literal(value)}"


def _check_bounds(where: str, kind: str, values: list, source: Path) -> None:
    number = int if kind == "randint" else (int, float)
    ok = (
        len(values) == 2
        and all(isinstance(v, number) and not isinstance(v, bool) for v in values)
        and values[0] < values[1]
        and (kind != "loguniform" or values[0] > 0)
    )
    if not ok:
        raise SweepError(where, source, f"`{kind}: {values}` is not {DISTRIBUTIONS[kind]} with low < high", f"write {{{kind}: {DISTRIBUTIONS[kind]}}}")


def hydra_literal(value: Any) -> str:
    """``value`` written so Hydra's override parser reads it back unchanged."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        value = value.item()  # numpy scalars from Tune's samplers
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a config value")


def parse_space(raw: Any, source: Path) -> tuple[Dimension, ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise SweepError("space", source, f"expected a non-empty mapping of train.yaml paths, got {raw!r}", "write e.g. `space: {optimizer.lr: {loguniform: [1e-4, 1e-2]}}`")
    return tuple(Dimension.parse(str(key), value, source) for key, value in raw.items())


def check_space(space: Iterable[Dimension], base: DictConfig, source: Path) -> None:
    """Every path must name a key of the base config (or be added with ``+``), and every
    representative value must give a valid train config."""
    for dim in space:
        where = f"space.{'+' if dim.add else ''}{dim.path}"
        if dim.path.split(".")[0] in FIXED_PREFIXES:
            raise SweepError(where, source, f"`{dim.path}` is fixed for the whole sweep (data, token list and statistics are prepared once; names and directories are set per trial)", "search model, optimizer, scheduler, dataloader or trainer keys instead")
        exists = has_key(base, dim.path)
        if not exists and not dim.add:
            raise SweepError(where, source, f"`{dim.path}` is not a key of the base config (a typo?)", f"fix the path, or write `+{dim.path}` to add a new key")
        if exists and dim.add:
            raise SweepError(where, source, f"`+{dim.path}` adds a key the base config already has", f"write `{dim.path}` without the `+`")
        for value in dim.representatives():
            try:
                apply_params(base, [dim], {dim.path: value}, source)
            except ConfigError as exc:
                raise SweepError(where, source, f"value {value!r} gives an invalid train config: `{exc.key}`: {exc.problem}", exc.fix) from None


def apply_params(base: DictConfig, space: Iterable[Dimension], params: Mapping[str, Any], source: Path, **fixed: Any) -> DictConfig:
    """A validated copy of ``base`` with sampled ``params`` (keyed by path) and ``fixed`` top-level values."""
    cfg = OmegaConf.create(OmegaConf.to_container(base, resolve=False))
    apply_overrides(cfg, [dim.override(params[dim.path]) for dim in space], source)
    for key, value in fixed.items():
        cfg[key] = value
    validate(cfg, source)
    return cfg
