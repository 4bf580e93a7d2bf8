"""The step's consensus flags in DDP's own gradient all-reduce, instead of a collective of their own.

Under DDP every step already all-reduces the gradients. A DDP communication hook
(``DistributedDataParallel.register_comm_hook``, DDP's extension point for what travels with the
gradients) appends this rank's flags (its loss is non-finite; it has a preemption notice) to the
first gradient bucket and splits them off again after the reduction: every rank learns every
rank's flags from the collective DDP makes anyway. A separate ``all_reduce`` of three numbers cost
1.0-1.4 ms per step on a 2-core machine with 2 gloo ranks (a step of a few milliseconds took
1.5-1.9x that of a bare module); on top of a gradient bucket it costs two numbers more to send.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel


class StepFlagsHook:
    """Carries flags set before a backward through that backward's gradient all-reduce.

    :meth:`set_local` before the backward, :meth:`take` after it: the flags summed over the ranks
    (``> 0``: some rank raised it), or ``None`` when no synchronising backward ran since.
    Gradients are averaged exactly as DDP's default hook does.
    """

    def __init__(self) -> None:
        self._local: torch.Tensor | None = None
        self._agreed: torch.Tensor | None = None

    def register(self, model: DistributedDataParallel) -> bool:
        """Install on ``model``; ``False`` where it already has a hook (a user's, e.g. compression)."""
        try:
            model.register_comm_hook(None, self._hook)
        except RuntimeError:
            return False
        return True

    def set_local(self, flags: torch.Tensor) -> None:
        self._local = flags.detach().float().reshape(-1)
        self._agreed = None

    def take(self) -> torch.Tensor | None:
        agreed, self._agreed = self._agreed, None
        return agreed

    def _hook(self, state, bucket):  # unannotated: DDP rejects a string annotation of `bucket`
        if bucket.index() != 0 or self._local is None:
            return allreduce_hook(None, bucket)
        buffer = bucket.buffer()
        size = buffer.numel()
        flags, self._local = self._local.to(device=buffer.device, dtype=buffer.dtype), None
        combined = torch.cat([buffer, flags])
        combined[:size].div_(dist.get_world_size())  # in place: one bucket-sized copy, not two

        def split(fut: torch.futures.Future) -> torch.Tensor:
            reduced = fut.value()[0]
            self._agreed = reduced[size:].clone()
            buffer.copy_(reduced[:size])
            return buffer

        return dist.all_reduce(combined, async_op=True).get_future().then(split)
