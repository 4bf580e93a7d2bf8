"""The step's consensus flags in DDP's own gradient all-reduce, instead of a collective of their own.

Under DDP every step already all-reduces the gradients. :class:`StepFlags` is a two-element
parameter whose gradient is this rank's flags (its loss is non-finite; it has a preemption
notice): the training step adds ``flags[0] * loss_bad (+ flags[1] with a notice)`` to the loss
(``flags`` stays 0, so the loss is unchanged and its gradient is the local flags), and DDP's
built-in all-reduce averages that gradient with all the others: after the backward every rank
holds every rank's flags.

Measured on ToyASR (a step of ~2 ms) under 2-process gloo DDP on 2 cores: a separate
``all_reduce`` of the flags cost 1.0-1.4 ms per step; a Python DDP communication hook appending
them to the first bucket, 0.27 ms (each bucket's future callback takes the GIL); this parameter,
0.06 ms (benchmarks ``module_overhead``, README).
"""

from __future__ import annotations

import torch
from torch import nn


class StepFlags(nn.Module):
    """Carries flags set in a training step through that step's gradient all-reduce.

    :meth:`attach` in the training step, :meth:`agreed` after the backward: the flags averaged
    over the ranks (``> 0``: some rank raised it). Never trained (no optimizer holds it) and never
    saved: checkpoints and exported models do not see it. It exists from the module's construction
    (inactive): callbacks that copy the module's parameters at their own set-up (Lightning's EMA,
    before the module's ``setup``) must see the same parameters as training does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flags = nn.Parameter(torch.zeros(2), requires_grad=False)
        self._active = False

    @property
    def active(self) -> bool:
        """Kept apart from ``flags.requires_grad``, which other wrappers may change (FSDP's
        ``use_orig_params`` views take their flat parameter's)."""
        return self._active

    def use(self, active: bool) -> None:
        """Whether the training step carries the flags. Decided before DDP wraps the module: DDP
        all-reduces exactly the parameters that require grad then, and each of them must take part
        in every backward."""
        self._active = active
        self.flags.requires_grad_(active)

    def attach(self, loss: torch.Tensor, loss_bad: torch.Tensor, notice: bool) -> torch.Tensor:
        """``loss`` (same value) whose backward leaves ``[loss_bad, notice]`` as this rank's
        flags' gradient (a notice is rare: without one, ``flags[1]`` gets a zero gradient)."""
        if self.flags.grad is not None:
            self.flags.grad.zero_()  # no optimizer zeroes it: last step's average would add up
        carried = loss + self.flags[0] * loss_bad
        return carried + self.flags[1] if notice else carried

    def agreed(self) -> torch.Tensor | None:
        """The flags averaged over the ranks by the last backward (``None`` before the first)."""
        return self.flags.grad

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        pass  # nothing to keep: a checkpoint of this module has no key for it

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        pass  # nor expects one: checkpoints from before it existed load as they are
