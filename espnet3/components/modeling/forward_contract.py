"""The forward contract every espnet3 model honours: ``loss, stats, weight = model(**batch)``.

Checked on every step because a wrong return type otherwise surfaces far away (a
Lightning logging error, a DDP hang, or a silently leaked autograd graph).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from espnet3.components.modeling.optimization_spec import OptimizationStep

EXPECTED = "`loss, stats, weight = model(**batch)`"


@dataclass
class ForwardOutput:
    """A checked model output; ``losses`` are the OptimizationSteps in the multi path."""

    loss: torch.Tensor | None
    losses: list[OptimizationStep]
    stats: dict[str, torch.Tensor | float]
    weight: torch.Tensor | float | None

    def all_losses(self) -> list[torch.Tensor]:
        return [self.loss] if self.loss is not None else [step.loss for step in self.losses]


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype}, requires_grad={value.requires_grad})"
    return f"{type(value).__name__} {value!r}"[:200]


class ForwardContract:
    """Validates model outputs; remembers which stats it already warned about."""

    def __init__(self, model_name: str, multi: bool) -> None:
        self.model_name = model_name
        self.multi = multi
        self._warned_attached: set[str] = set()

    def check(self, output: object, training: bool) -> ForwardOutput:
        if not isinstance(output, (tuple, list)) or len(output) != 3:
            got = f"a {type(output).__name__} of length {len(output)}" if isinstance(output, (tuple, list)) else _describe(output)
            raise TypeError(f"{self.model_name}.forward must return {EXPECTED} (a 3-tuple); got {got}.")
        loss, stats, weight = output
        if self.multi:
            losses = self._check_steps(loss)
            loss = None
        else:
            loss = self._check_loss(loss, training)
            losses = []
        return ForwardOutput(loss=loss, losses=losses, stats=self.check_stats(stats), weight=self.check_weight(weight))

    def _check_loss(self, loss: object, training: bool) -> torch.Tensor:
        if isinstance(loss, OptimizationStep) or (isinstance(loss, list) and loss and isinstance(loss[0], OptimizationStep)):
            raise TypeError(
                f"{self.model_name} returned OptimizationStep(s) but the config has a single `optimizer`; "
                "configure `optimizers:` keyed by the step names to route them."
            )
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or loss.dim() > 1:
            raise TypeError(
                f"{self.model_name}.forward must return a scalar loss tensor as the first element of "
                f"{EXPECTED}; got {_describe(loss)}."
            )
        if training and not loss.requires_grad:
            raise TypeError(
                f"{self.model_name}.forward returned a loss that does not require grad in training "
                f"({_describe(loss)}): was it detached, computed under torch.no_grad(), or are all "
                "parameters frozen?"
            )
        return loss.reshape(())

    def _check_steps(self, loss: object) -> list[OptimizationStep]:
        steps = [loss] if isinstance(loss, OptimizationStep) else loss
        if (
            not isinstance(steps, (list, tuple))
            or not steps
            or not all(isinstance(step, OptimizationStep) for step in steps)
        ):
            raise TypeError(
                f"With `optimizers:` configured, {self.model_name}.forward must return an "
                f"OptimizationStep(loss, name) or a non-empty list of them as the loss in {EXPECTED}; "
                f"got {_describe(loss)}."
            )
        for step in steps:
            if not isinstance(step.loss, torch.Tensor) or step.loss.numel() != 1:
                raise TypeError(
                    f"OptimizationStep {step.name!r} from {self.model_name} must hold a scalar loss tensor; "
                    f"got {_describe(step.loss)}."
                )
        return list(steps)

    def check_stats(self, stats: object) -> dict[str, torch.Tensor | float]:
        if not isinstance(stats, Mapping):
            raise TypeError(
                f"{self.model_name}.forward must return a dict of statistics as the second element of "
                f"{EXPECTED}; got {_describe(stats)}."
            )
        clean: dict[str, torch.Tensor | float] = {}
        for key, value in stats.items():
            if value is None:  # ESPnet2 models return None for metrics they skipped.
                continue
            if isinstance(value, torch.Tensor):
                if value.requires_grad:
                    if key not in self._warned_attached:
                        self._warned_attached.add(key)
                        warnings.warn(
                            f"{self.model_name} returned stats[{key!r}] still attached to the autograd "
                            "graph; espnet3 detaches it (return `value.detach()` to silence this).",
                            stacklevel=3,
                        )
                    value = value.detach()
                if value.numel() != 1:
                    raise TypeError(f"stats[{key!r}] from {self.model_name} must be a scalar; got {_describe(value)}.")
                clean[str(key)] = value.reshape(())
            elif isinstance(value, numbers.Number) and not isinstance(value, bool):
                clean[str(key)] = float(value)
            else:
                raise TypeError(
                    f"stats[{key!r}] from {self.model_name} must be a tensor, a number or None; got {_describe(value)}."
                )
        return clean

    def check_weight(self, weight: object) -> torch.Tensor | float | None:
        if weight is None:
            return None
        if isinstance(weight, torch.Tensor) and weight.numel() == 1:
            return weight.detach().reshape(()).float()
        if isinstance(weight, numbers.Number) and not isinstance(weight, bool):
            return float(weight)
        raise TypeError(
            f"{self.model_name}.forward must return a weight (a scalar tensor, a number or None) as the "
            f"third element of {EXPECTED}; got {_describe(weight)}."
        )
