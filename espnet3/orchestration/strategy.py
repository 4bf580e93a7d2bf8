"""``trainer.strategy``: how the model is spread over the workers, as one of Ray's Lightning strategies.

``prepare_trainer`` accepts only Ray's strategy classes, so the names map onto them; their
options are the Lightning strategy's keyword arguments (``sharding_strategy``,
``auto_wrap_policy``, ``cpu_offload``, ... for FSDP; ``find_unused_parameters``, ``static_graph``
for DDP; backend and timeout are Ray's ``TorchConfig``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STRATEGIES = {
    "ddp": "ray.train.lightning.RayDDPStrategy",
    "fsdp": "ray.train.lightning.RayFSDPStrategy",
}
EXAMPLE = "`trainer.strategy: fsdp` or `trainer.strategy: {name: fsdp, sharding_strategy: SHARD_GRAD_OP}`"


@dataclass(frozen=True)
class StrategySpec:
    """The parsed ``trainer.strategy``.

    Attributes:
        name: ``ddp`` (default) or ``fsdp`` (:data:`STRATEGIES`).
        options: keyword arguments of the strategy class.
    """

    name: str = "ddp"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            hint = (
                " (DeepSpeed is not supported yet: see docs/train_yaml.md)" if self.name == "deepspeed" else ""
            )
            raise ValueError(
                f"`trainer.strategy: {self.name}` is not a strategy espnet3 runs on Ray{hint}; "
                f"choose one of {', '.join(STRATEGIES)}, e.g. {EXAMPLE}"
            )

    @classmethod
    def from_config(cls, value: Any) -> StrategySpec:
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping) and isinstance(value.get("name"), str):
            options = {k: v for k, v in value.items() if k != "name"}
            return cls(value["name"], options)
        raise ValueError(f"`trainer.strategy` must be a name or a block with `name`, got {value!r}; write {EXAMPLE}")

    def check(self, *, multi_optimizer: bool, ema: bool, gradient_clip_norm: bool) -> None:
        """Refuse combinations that fail inside the workers, with the reason and the fix."""
        if self.name != "fsdp":
            return
        if multi_optimizer:
            raise ValueError(
                "`trainer.strategy: fsdp` cannot train the `optimizers:` (several losses) path: PyTorch's FSDP, "
                "which Ray's RayFSDPStrategy wraps, allows one backward per forward, and each OptimizationStep "
                "loss is back-propagated on its own. Use `trainer.strategy: ddp` for this model."
            )
        if ema:
            raise ValueError(
                "`ema` keeps a full copy of the model, which Lightning's EMA callback cannot do for a sharded "
                "(FSDP) model; remove `ema` or use `trainer.strategy: ddp`."
            )
        if gradient_clip_norm:
            raise ValueError(
                "Lightning cannot clip gradients by norm under FSDP (`trainer.gradient_clip_val` with the default "
                "`gradient_clip_algorithm: norm`); set `trainer.gradient_clip_algorithm: value`, or remove "
                "`trainer.gradient_clip_val`."
            )

    def check_workers(self, use_gpu: bool) -> None:
        if self.name == "fsdp" and not use_gpu:
            raise ValueError(
                "`trainer.strategy: fsdp` needs GPU workers (PyTorch's FSDP refuses CPU devices): launch with "
                "--num-gpus N, or use `trainer.strategy: ddp` on CPU workers."
            )

    def build(self, ddp_kwargs: Mapping[str, Any]):
        """The Ray strategy; ``ddp_kwargs`` are what the Lightning module needs under DDP
        (``find_unused_parameters`` for several optimizers), and win over the options only to turn
        a needed feature on."""
        from espnet3.utils.instantiate import import_dotted

        options = dict(self.options)
        if self.name == "ddp":
            for key, needed in ddp_kwargs.items():
                options[key] = bool(options.get(key)) or needed
        return import_dotted(STRATEGIES[self.name])(**options)
