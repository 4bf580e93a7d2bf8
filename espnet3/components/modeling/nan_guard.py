"""Skip a batch on every rank when any rank sees a non-finite loss.

Under DDP every rank must run the same collectives, so the decision to skip is made
jointly: one ``all_reduce(MAX)`` of a 0/1 flag per step, whenever torch.distributed
is initialised with more than one rank, on any backend and any number of nodes.
(Upstream ESPnet3 gates its sync on GPUs per node, so one GPU per node across nodes
desynchronises; it also uses barrier + all_gather, about 3x the cost of one
all_reduce on gloo.)
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
import torch.distributed as dist

DEFAULT_MAX_NAN_BATCHES = 100


class NaNLimitError(RuntimeError):
    """``max_nan_batches`` consecutive batches were skipped: training diverged (a restart repeats it)."""


class BatchDecision(enum.Enum):
    TRAIN = "train"
    SKIP = "skip"


def world_is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def any_rank_true(local: torch.Tensor) -> bool:
    """Global OR of a boolean tensor flag: one collective, identical result on every rank."""
    flag = local.to(torch.float32).reshape(1)
    if world_is_distributed():
        if dist.get_backend() == "nccl" and flag.device.type != "cuda":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class NonFiniteGuard:
    """Decides TRAIN/SKIP per batch and fails the run after too many skips in a row.

    The consecutive-skip counter is part of the checkpoint so a resumed run keeps
    counting where it stopped. ``consensus`` exists for the benchmark that prices the
    collective; training code never turns it off.
    """

    def __init__(self, max_consecutive: int = DEFAULT_MAX_NAN_BATCHES) -> None:
        if isinstance(max_consecutive, bool) or not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise ValueError(f"`max_nan_batches` must be a positive integer; got {max_consecutive!r}.")
        self.max_consecutive = max_consecutive
        self.consecutive_skips = 0
        self.total_skips = 0
        self.consensus = True

    def decide(self, losses: Sequence[torch.Tensor]) -> BatchDecision:
        return self.record(self.any_rank_bad(losses))

    def any_rank_bad(self, losses: Sequence[torch.Tensor]) -> bool:
        """Whether any rank has a non-finite loss among ``losses`` (no counting: see :meth:`record`).

        ESPnet2 GAN turns are checked one at a time, since each turn's forward follows the
        previous turn's update.
        """
        local_bad = ~torch.isfinite(torch.stack([loss.detach().float().reshape(()) for loss in losses])).all()
        return any_rank_true(local_bad) if self.consensus else bool(local_bad)

    def record(self, bad: bool) -> BatchDecision:
        """Count one batch as trained or skipped; raise after ``max_consecutive`` skips in a row."""
        if not bad:
            self.consecutive_skips = 0
            return BatchDecision.TRAIN
        self.consecutive_skips += 1
        self.total_skips += 1
        if self.consecutive_skips >= self.max_consecutive:
            raise NaNLimitError(
                f"Skipped {self.consecutive_skips} consecutive batches because the loss was NaN/Inf on at "
                f"least one rank (max_nan_batches={self.max_consecutive}). Training is diverging: lower the "
                "learning rate (optimizer lr / warmup), enable gradient clipping "
                "(trainer.gradient_clip_val), or check the data for empty or corrupt utterances."
            )
        return BatchDecision.SKIP

    def state_dict(self) -> dict[str, int]:
        return {"consecutive_skips": self.consecutive_skips, "total_skips": self.total_skips}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consecutive_skips = int(state["consecutive_skips"])
        self.total_skips = int(state["total_skips"])


def grads_are_finite(params: Sequence[torch.nn.Parameter]) -> bool:
    """Whether every gradient is finite (ESPnet2 skips the update otherwise).

    No collective is needed: under DDP the gradients are already all-reduced, so
    every rank reaches the same answer.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    norms = torch._foreach_norm(grads)
    return bool(torch.isfinite(torch.stack(norms)).all())
