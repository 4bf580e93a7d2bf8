"""Typed optimisation specs parsed once from the train config.

The Lightning module never reads raw optimiser YAML: it receives an
:class:`OptimizationPlan` whose ``__post_init__`` checks already raised, with the
offending key named, before any worker started.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

SINGLE_KEYS = ("optimizer", "scheduler", "scheduler_interval", "scheduler_monitor")
MULTI_KEYS = ("optimizers", "schedulers")
OPTIMIZER_SPEC_KEYS = (
    "optimizer",
    "params",
    "accum_grad_steps",
    "step_every_n_iters",
    "gradient_clip_val",
    "gradient_clip_algorithm",
)
SCHEDULER_SPEC_KEYS = ("scheduler", "interval", "monitor")
INTERVALS = ("step", "epoch")
CLIP_ALGORITHMS = ("norm", "value")


@dataclass
class OptimizationStep:
    """One loss routed to one named optimizer (``optimizers.<name>`` in the config).

    A multi-optimizer model returns a list of these as its ``loss`` (for example a
    generator and a discriminator loss) and the Lightning module back-propagates
    each into its own optimizer.
    """

    loss: torch.Tensor
    name: str


def _to_container(value: Any) -> Any:
    """Plain dict/list copies, so specs never alias (and never mutate) a DictConfig."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a hard dependency
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _to_container(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_container(v) for v in value]
    return value


def _require_target(block: Any, key: str) -> dict:
    if not isinstance(block, Mapping) or "_target_" not in block:
        raise ValueError(
            f"`{key}` must be a mapping with a `_target_` class path, e.g. "
            f"`{key}: {{_target_: torch.optim.Adam, lr: 0.001}}`; got {block!r}."
        )
    return dict(block)


def _named_block(cfg: Any, key: str, allowed: Sequence[str], required: Sequence[str]) -> dict:
    """One ``optimizers.<name>`` / ``schedulers.<name>`` entry as a checked plain dict."""
    cfg = _to_container(cfg)
    if not isinstance(cfg, Mapping):
        raise ValueError(f"`{key}` must be a mapping with {', '.join(f'`{r}`' for r in required)}; got {cfg!r}.")
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in `{key}`; valid keys: {list(allowed)}.")
    for name in required:
        if name not in cfg:
            raise ValueError(f"`{key}.{name}` is required.")
    return dict(cfg)


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{key}` must be a positive integer; got {value!r}.")
    return value


@dataclass
class OptimizerSpec:
    """One entry of ``optimizers:``: which parameters it owns and how it steps.

    ``params`` are dotted parameter names matched on dot boundaries, anywhere in the name
    (``generator`` matches ``tts.generator.layers.0.weight`` but not ``tts.generator2.weight``).
    ``step_every_n_iters`` lets an optimizer update on every n-th completed
    accumulation window only (e.g. a discriminator that learns half as often); the
    windows in between are discarded.
    """

    name: str
    optimizer: dict
    params: list[str]
    accum_grad_steps: int = 1
    step_every_n_iters: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"

    def __post_init__(self) -> None:
        key = f"optimizers.{self.name}"
        self.optimizer = _require_target(self.optimizer, f"{key}.optimizer")
        if isinstance(self.params, str):
            self.params = [self.params]
        if (
            not isinstance(self.params, Sequence)
            or not self.params
            or not all(isinstance(p, str) for p in self.params)
        ):
            raise ValueError(
                f"`{key}.params` must be a dotted parameter name or a non-empty list of them "
                f"(e.g. `params: [generator]`); got {self.params!r}."
            )
        self.params = list(self.params)
        _positive_int(self.accum_grad_steps, f"{key}.accum_grad_steps")
        _positive_int(self.step_every_n_iters, f"{key}.step_every_n_iters")
        if self.gradient_clip_val is not None and (
            isinstance(self.gradient_clip_val, bool)
            or not isinstance(self.gradient_clip_val, (int, float))
            or self.gradient_clip_val <= 0
        ):
            raise ValueError(
                f"`{key}.gradient_clip_val` must be a positive number or null; "
                f"got {self.gradient_clip_val!r}."
            )
        if self.gradient_clip_algorithm not in CLIP_ALGORITHMS:
            raise ValueError(
                f"`{key}.gradient_clip_algorithm` must be one of {CLIP_ALGORITHMS}; "
                f"got {self.gradient_clip_algorithm!r}."
            )

    @classmethod
    def from_config(cls, name: str, cfg: Any) -> OptimizerSpec:
        block = _named_block(cfg, f"optimizers.{name}", OPTIMIZER_SPEC_KEYS, required=("optimizer", "params"))
        return cls(name=name, **block)


@dataclass
class SchedulerSpec:
    """A learning-rate scheduler bound to the optimizer of the same name."""

    name: str
    scheduler: dict
    interval: Literal["step", "epoch"] = "step"
    monitor: str | None = None

    def __post_init__(self) -> None:
        key = "scheduler" if self.name == "default" else f"schedulers.{self.name}"
        self.scheduler = _require_target(self.scheduler, f"{key}.scheduler" if self.name != "default" else key)
        if self.interval not in INTERVALS:
            interval_key = "scheduler_interval" if self.name == "default" else f"{key}.interval"
            raise ValueError(f"`{interval_key}` must be one of {INTERVALS}; got {self.interval!r}.")
        if self.monitor is not None and not isinstance(self.monitor, str):
            raise ValueError(f"`{key}` monitor must be a metric name such as 'valid/loss'; got {self.monitor!r}.")

    @classmethod
    def from_config(cls, name: str, cfg: Any) -> SchedulerSpec:
        block = _named_block(cfg, f"schedulers.{name}", SCHEDULER_SPEC_KEYS, required=("scheduler",))
        return cls(name=name, **block)


@dataclass
class OptimizationPlan:
    """Everything the Lightning module needs to build and drive its optimizers.

    ``multi`` selects manual optimisation with one :class:`OptimizerSpec` per name;
    otherwise ``optimizers`` holds the single spec named ``default`` (covering all
    trainable parameters) and Lightning's automatic optimisation drives it.
    """

    optimizers: dict[str, OptimizerSpec]
    schedulers: dict[str, SchedulerSpec] = field(default_factory=dict)
    multi: bool = False

    @classmethod
    def from_config(cls, config: Any) -> OptimizationPlan:
        config = config if isinstance(config, Mapping) else {}
        has_single = config.get("optimizer") is not None
        has_multi = config.get("optimizers") is not None
        if has_single and has_multi:
            raise ValueError(
                "Both `optimizer` and `optimizers` are set; use `optimizer` (+ `scheduler`) for one "
                "optimizer, or `optimizers` (+ `schedulers`) keyed by name for several, not both."
            )
        if not has_single and not has_multi:
            raise ValueError(
                "No optimizer configured: add `optimizer: {_target_: torch.optim.Adam, lr: 0.001}` "
                "(or `optimizers:` keyed by name for several optimizers)."
            )
        if has_multi:
            return cls._multi(config)
        return cls._single(config)

    @classmethod
    def _single(cls, config: Mapping) -> OptimizationPlan:
        if config.get("schedulers") is not None:
            raise ValueError(
                "`schedulers` (plural) belongs to the multi-optimizer path; with a single `optimizer` "
                "use `scheduler` (+ `scheduler_interval`, `scheduler_monitor`)."
            )
        spec = OptimizerSpec(name="default", optimizer=_to_container(config["optimizer"]), params=[""])
        schedulers = {}
        if config.get("scheduler") is not None:
            schedulers["default"] = SchedulerSpec(
                name="default",
                scheduler=_to_container(config["scheduler"]),
                interval=config.get("scheduler_interval") or "step",
                monitor=config.get("scheduler_monitor"),
            )
        return cls(optimizers={"default": spec}, schedulers=schedulers, multi=False)

    @classmethod
    def _multi(cls, config: Mapping) -> OptimizationPlan:
        for key in SINGLE_KEYS[1:]:
            if config.get(key) is not None and not (key == "scheduler_interval" and config.get(key) == "step"):
                raise ValueError(
                    f"`{key}` belongs to the single-optimizer path; with `optimizers` configure "
                    f"schedulers as `schedulers.<name>: {{scheduler: ..., interval: ..., monitor: ...}}`."
                )
        raw = _to_container(config["optimizers"])
        if not isinstance(raw, Mapping) or not raw:
            raise ValueError(
                "`optimizers` must be a non-empty mapping keyed by optimizer name, e.g. "
                "`optimizers: {generator: {optimizer: {...}, params: [generator]}}`."
            )
        optimizers = {name: OptimizerSpec.from_config(name, block) for name, block in raw.items()}
        raw_schedulers = _to_container(config.get("schedulers") or {})
        if not isinstance(raw_schedulers, Mapping):
            raise ValueError("`schedulers` must be a mapping keyed by the optimizer names.")
        unknown = sorted(set(raw_schedulers) - set(optimizers))
        if unknown:
            raise ValueError(
                f"`schedulers` has name(s) {unknown} with no optimizer of that name; "
                f"configured optimizers: {sorted(optimizers)}."
            )
        schedulers = {name: SchedulerSpec.from_config(name, block) for name, block in raw_schedulers.items()}
        trainer = config.get("trainer") or {}
        if trainer.get("gradient_clip_val") is not None:
            raise ValueError(
                "`trainer.gradient_clip_val` cannot be used with `optimizers` (manual optimisation); "
                "set `optimizers.<name>.gradient_clip_val` per optimizer instead."
            )
        if (trainer.get("accumulate_grad_batches") or 1) != 1:
            raise ValueError(
                "`trainer.accumulate_grad_batches` cannot be used with `optimizers`; "
                "set `optimizers.<name>.accum_grad_steps` per optimizer instead."
            )
        return cls(optimizers=optimizers, schedulers=schedulers, multi=True)
