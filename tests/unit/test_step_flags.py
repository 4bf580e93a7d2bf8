"""StepFlags: the step's consensus flags as a parameter's gradient (what DDP all-reduces anyway).

The 2-process behaviour (a flag raised on one rank reaches every rank, no collective of its own)
is in test_preemption_agreement and test_lightning_module_ddp; here, the single-process contract.
"""

from __future__ import annotations

import math

import torch

from espnet3.components.modeling.nan_guard import agreed_step_flags, non_finite
from espnet3.components.modeling.step_flags import StepFlags


def _step(flags: StepFlags, weight: torch.nn.Parameter, value: float, notice: bool) -> torch.Tensor:
    loss = (weight * value).sum()
    carried = flags.attach(loss, non_finite([loss]), notice)
    carried.backward()
    return carried.detach()


def test_the_loss_is_unchanged_and_the_flags_are_its_gradient_fresh_every_step():
    flags, weight = StepFlags(), torch.nn.Parameter(torch.ones(3))
    assert not flags.active  # until the module's setup finds DDP
    flags.use(True)
    assert flags.agreed() is None
    assert _step(flags, weight, 2.0, notice=False).item() == 6.0
    assert flags.agreed().tolist() == [0.0, 0.0]
    _step(flags, weight, 1.0, notice=True)
    assert flags.agreed().tolist() == [0.0, 1.0]
    assert math.isnan(_step(flags, weight, float("nan"), notice=False).item())  # zeroed by the module, not here
    assert flags.agreed().tolist() == [1.0, 0.0]  # not [1, 1]: the last step's gradient does not add up
    assert flags.flags.detach().tolist() == [0.0, 0.0]


def test_it_is_not_in_checkpoints_and_old_checkpoints_load():
    module = torch.nn.Module()
    module.net = torch.nn.Linear(2, 2)
    module.step_flags = StepFlags()
    assert set(module.state_dict()) == {"net.weight", "net.bias"}
    old = torch.nn.Linear(2, 2).state_dict()
    assert not module.load_state_dict({f"net.{k}": v for k, v in old.items()}, strict=True).missing_keys


def test_the_agreed_flags_and_a_non_finite_gradient_are_read_in_one_copy():
    grads = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))]
    for p in grads:
        p.grad = torch.ones_like(p)
    assert agreed_step_flags(torch.tensor([0.5, 0.0]), grads) == (True, False, False)
    grads[1].grad[0] = float("inf")
    assert agreed_step_flags(torch.tensor([0.0, 0.5]), grads) == (False, True, True)
    grads[1].grad[0] = float("nan")
    assert agreed_step_flags(torch.tensor([0.0, 0.0]), grads) == (False, True, False)
    assert agreed_step_flags(torch.tensor([0.0, 0.0]), None) == (False, False, False)
