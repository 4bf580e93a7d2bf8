"""Route each ``OptimizationStep`` to its named optimizer (the multi-optimizer path).

Runs under Lightning manual optimisation. Per optimizer it keeps an accumulation
counter, a count of completed accumulation windows and the number of updates; all
three are checkpointed so a resumed run continues mid-window exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from espnet3.components.modeling.optimization_spec import OptimizationStep, OptimizerSpec


@dataclass
class RouteState:
    accum_counter: int = 0
    windows: int = 0
    update_step: int = 0


class OptimizerRouter:
    def __init__(self, specs: Mapping[str, OptimizerSpec]) -> None:
        self.specs = dict(specs)
        self.state = {name: RouteState() for name in self.specs}
        self.params: dict[str, list[nn.Parameter]] = {}

    def bind(self, params: Mapping[str, Sequence[nn.Parameter]]) -> None:
        self.params = {name: list(group) for name, group in params.items()}

    def check_names(self, steps: Sequence[OptimizationStep]) -> None:
        for step in steps:
            if step.name not in self.specs:
                raise KeyError(
                    f"OptimizationStep name {step.name!r} is not a configured optimizer; "
                    f"`optimizers` has: {sorted(self.specs)}."
                )

    def route(
        self,
        steps: Sequence[OptimizationStep],
        optimizers: Mapping[str, torch.optim.Optimizer],
        backward: Callable[[torch.Tensor], None],
        grads_finite: Callable[[str], bool],
    ) -> tuple[list[str], list[str]]:
        """Backward each step into its optimizer; return (updated names, names skipped for non-finite grads)."""
        updated, skipped = [], []
        for step in steps:
            spec, state, optimizer = self.specs[step.name], self.state[step.name], optimizers[step.name]
            if state.accum_counter == 0:
                optimizer.zero_grad(set_to_none=True)
            # A generator loss also reaches the discriminator's parameters; keep that
            # from leaking into another optimizer's half-accumulated gradient.
            stash = self._stash_other_windows(step.name)
            backward(step.loss / spec.accum_grad_steps)
            self._restore(stash)
            state.accum_counter += 1
            if state.accum_counter < spec.accum_grad_steps:
                continue
            state.accum_counter = 0
            state.windows += 1
            if state.windows % spec.step_every_n_iters != 0:
                continue
            if not grads_finite(step.name):
                skipped.append(step.name)
                continue
            optimizer.step()
            state.update_step += 1
            updated.append(step.name)
        return updated, skipped

    def _stash_other_windows(self, name: str) -> list[tuple[nn.Parameter, torch.Tensor | None]]:
        stash = []
        for other, state in self.state.items():
            if other == name or state.accum_counter == 0:
                continue
            stash.extend((p, None if p.grad is None else p.grad.clone()) for p in self.params[other])
        return stash

    @staticmethod
    def _restore(stash: list[tuple[nn.Parameter, torch.Tensor | None]]) -> None:
        for param, grad in stash:
            param.grad = grad

    def state_dict(self) -> dict[str, dict[str, int]]:
        return {name: asdict(state) for name, state in self.state.items()}

    def load_state_dict(self, state: Mapping[str, Mapping[str, int]]) -> None:
        missing = sorted(set(self.specs) - set(state))
        if missing:
            raise KeyError(
                f"Checkpoint has no optimizer state for {missing} (it has {sorted(state)}); "
                "the `optimizers` names changed since it was written."
            )
        self.state = {name: RouteState(**state[name]) for name in self.specs}
