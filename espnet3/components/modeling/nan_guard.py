"""Skip a batch on every rank when any rank sees a non-finite loss.

Under DDP every rank must run the same collectives, so the decision to skip is made
jointly: one ``all_reduce(MAX)`` of 0/1 flags per step (the loss flag and, in
:func:`step_flags`, the gradient check with it), whenever torch.distributed is
initialised with more than one rank, on any backend and any number of nodes.
(Upstream ESPnet3 gates its sync on GPUs per node, so one GPU per node across nodes
desynchronises; it also uses barrier + all_gather, about 3x the cost of one
all_reduce on gloo.)

The same collective carries one more flag: whether this rank has a preemption notice
(:mod:`espnet3.orchestration.preemption`), so that every rank agrees at the same step to
checkpoint, without a second synchronisation. Under DDP, without gradient accumulation, the
loss and notice flags ride in DDP's gradient all-reduce instead (:func:`agreed_step_flags`,
:mod:`espnet3.components.modeling.step_flags`): no collective of their own.
"""

from __future__ import annotations

import enum
import math
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


def _any_rank_max(flags: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of ``flags`` over the ranks (itself outside distributed runs)."""
    if world_is_distributed():
        if dist.get_backend() == "nccl" and flags.device.type != "cuda":
            flags = flags.cuda()
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def any_rank_flags(*local: torch.Tensor | bool) -> list[bool]:
    """Global OR of each flag: one collective, identical results on every rank."""
    device = next((f.device for f in local if isinstance(f, torch.Tensor)), torch.device("cpu"))
    flags = torch.stack([torch.as_tensor(f, device=device).float().reshape(()) for f in local])
    return [bool(v) for v in _any_rank_max(flags).tolist()]


def any_rank_true(local: torch.Tensor) -> bool:
    """Global OR of a boolean tensor flag: one collective, identical result on every rank."""
    return bool(_any_rank_max(local.to(torch.float32).reshape(1)).item())


def non_finite(losses: Sequence[torch.Tensor]) -> torch.Tensor:
    """This rank's flag, on the losses' device: whether any of ``losses`` is NaN/Inf (no host sync)."""
    if len(losses) == 1:  # the usual single loss: two small kernels instead of five
        return torch.isfinite(losses[0].detach()).logical_not().reshape(())
    return ~torch.isfinite(torch.stack([loss.detach().float().reshape(()) for loss in losses])).all()


def step_flags(
    loss_bad: torch.Tensor, params: Sequence[torch.nn.Parameter] | None, consensus: bool = True,
    notice: bool = False,
) -> tuple[bool, bool, bool]:
    """Every check of a training step with one host sync: (any rank's loss non-finite, gradients
    non-finite, any rank has a preemption ``notice``).

    A host sync stops the CPU from queueing the next step's kernels while the GPU works, so the
    loss flag, the gradient flag and the notice travel together: one 3-element
    ``all_reduce(MAX)`` (the gradient flag rides along; DDP's all-reduced gradients agree anyway,
    FSDP's shards need it) and one copy to the host. ``params=None`` skips the gradient check (a
    GradScaler does its own).
    """
    flags = torch.stack([loss_bad.float().reshape(()), _grads_flag(params, loss_bad.device),
                         torch.tensor(float(notice), device=loss_bad.device)])
    if consensus:
        flags = _any_rank_max(flags)
    loss_flag, grad_flag, notice_flag = flags.tolist()
    return bool(loss_flag), bool(grad_flag), bool(notice_flag)


def agreed_step_flags(agreed: torch.Tensor, params: Sequence[torch.nn.Parameter] | None) -> tuple[bool, bool, bool]:
    """:func:`step_flags` where DDP's gradient all-reduce already carried every rank's loss and
    notice flags (``agreed``: their averages over the ranks, from
    :class:`~espnet3.components.modeling.step_flags.StepFlags`): the gradient check is
    local (DDP's averaged gradients agree on every rank) and one copy to the host remains."""
    loss_flag, notice_flag, grads_norm = torch.cat([agreed.float().reshape(2),
                                                    _grads_norm(params, agreed.device).reshape(1)]).tolist()
    return loss_flag > 0, not math.isfinite(grads_norm), notice_flag > 0


def _grads_norm(params: Sequence[torch.nn.Parameter] | None, device: torch.device) -> torch.Tensor:
    """The sum of the gradients' norms, on the device (no host sync): non-finite where any
    gradient of ``params`` is (NaN and inf carry through the sum; finite norms reach inf only
    beyond 3e38, where ESPnet2's squared total norm overflowed long before)."""
    grads = [p.grad for p in params or () if p.grad is not None]
    if not grads:
        return torch.zeros((), device=device)
    return torch.stack(torch._foreach_norm(grads)).float().sum().to(device)


def _grads_flag(params: Sequence[torch.nn.Parameter] | None, device: torch.device) -> torch.Tensor:
    """1.0 where any gradient of ``params`` is non-finite, on the device (no host sync)."""
    return torch.isfinite(_grads_norm(params, device)).logical_not().float()


class NonFiniteGuard:
    """Decides TRAIN/SKIP per batch and fails the run after too many skips in a row.

    The consecutive-skip counter is part of the checkpoint so a resumed run keeps
    counting where it stopped. ``consensus`` exists for the benchmark that prices the
    collective; training code never turns it off.

    ``notice`` (a callable: whether this rank has a preemption notice) rides in every consensus
    collective; once any rank had one, :attr:`stop_agreed` is true on every rank from the same step.
    """

    def __init__(self, max_consecutive: int = DEFAULT_MAX_NAN_BATCHES) -> None:
        if isinstance(max_consecutive, bool) or not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise ValueError(f"`max_nan_batches` must be a positive integer; got {max_consecutive!r}.")
        self.max_consecutive = max_consecutive
        self.consecutive_skips = 0
        self.total_skips = 0
        self.consensus = True
        self.notice = None
        self.stop_agreed = False

    def local_notice(self) -> bool:
        return bool(self.notice()) if self.notice is not None else False

    def agree_step(self, loss_bad: torch.Tensor, params: Sequence[torch.nn.Parameter] | None,
                   agreed: torch.Tensor | None = None) -> tuple[bool, bool]:
        """:func:`step_flags` with this rank's notice: (any rank's loss non-finite, gradients non-finite);
        ``agreed``: the flags DDP's gradient all-reduce already carried (:func:`agreed_step_flags`)."""
        if agreed is not None and self.consensus:
            loss, grads, stop = agreed_step_flags(agreed, params)
        else:
            loss, grads, stop = step_flags(loss_bad, params, consensus=self.consensus, notice=self.local_notice())
        self.stop_agreed |= stop
        return loss, grads

    def decide(self, losses: Sequence[torch.Tensor]) -> BatchDecision:
        return self.record(self.any_rank_bad(losses))

    def any_rank_bad(self, losses: Sequence[torch.Tensor]) -> bool:
        """Whether any rank has a non-finite loss among ``losses`` (no counting: see :meth:`record`).

        ESPnet2 GAN turns are checked one at a time, since each turn's forward follows the
        previous turn's update.
        """
        local_bad = non_finite(losses)
        if not self.consensus:
            self.stop_agreed |= self.local_notice()
            return bool(local_bad)
        bad, stop = any_rank_flags(local_bad, self.local_notice())
        self.stop_agreed |= stop
        return bad

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
