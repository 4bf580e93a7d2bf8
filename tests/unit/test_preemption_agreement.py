"""The preemption notice rides in the NaN consensus: every rank agrees at the same step, with no extra collective
(under DDP with one sync per step, none at all: the flags travel in the gradient all-reduce).

Real 2-process Lightning DDP (gloo). Rank 1 alone gets a notice (as Ray's watcher leaves one on
the workers of a draining node); both ranks must see ``stop_agreed`` from the same batch, at an
optimizer-step boundary, whatever the training path (one sync per step, accumulation, GAN turns).
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from ddp_harness import run_ddp
from espnet3.components.modeling import nan_guard
from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from toy_models import GAN, Regressor, gan_batches, gan_config, loader, make_trainer, regression_batches

ADAM = {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.05}}
NOTICE_AT = 4


class NoticeOnRank1(L.Callback):
    """Gives rank 1 a notice from batch NOTICE_AT on; records where each rank saw the agreement."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.noticed = False
        self.agreed_at = None
        self.boundary_at = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.noticed = self.rank == 1 and batch_idx >= NOTICE_AT

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.nan_guard.stop_agreed and self.agreed_at is None:
            self.agreed_at = batch_idx
        if (pl_module.nan_guard.stop_agreed and self.boundary_at is None
                and not trainer.fit_loop.epoch_loop._should_accumulate()):
            self.boundary_at = batch_idx


def _train(rank, world_size, out_dir, path):
    calls = []
    original = nan_guard._any_rank_max
    nan_guard._any_rank_max = lambda flags: calls.append(1) or original(flags)
    torch.manual_seed(0)
    if path == "gan":
        module = ESPnetLightningModule(GAN(), gan_config())
        data, options = gan_batches([0, 1, 2, 0, 1, 2, 0, 1, 2, 0], seed=rank), {}
    else:
        module = ESPnetLightningModule(Regressor(), ADAM)
        data = regression_batches(10, seed=rank)
        options = {"accumulate_grad_batches": 3} if path == "accumulate" else {}
    probe = NoticeOnRank1(rank)
    module.nan_guard.notice = lambda: probe.noticed
    make_trainer([probe], ddp=module.ddp_kwargs(), **options).fit(module, loader(data))
    return {"agreed_at": probe.agreed_at, "boundary_at": probe.boundary_at, "collectives": len(calls)}


@pytest.mark.parametrize("path", ["one_sync", "accumulate", "gan"])
def test_a_notice_on_one_rank_stops_every_rank_at_the_same_step_boundary(tmp_path, path):
    results = run_ddp(_train, tmp_path, path=path)
    for result in results:
        assert "ok" in result, result.get("traceback")
    agreed = {r["ok"]["agreed_at"] for r in results}
    boundary = {r["ok"]["boundary_at"] for r in results}
    assert agreed == {NOTICE_AT}, "both ranks learn of rank 1's notice in the step it arrived"
    expected = {"accumulate": 5}.get(path, NOTICE_AT)  # batches 3-5 form the second optimizer step
    assert boundary == {expected}
    collectives = {r["ok"]["collectives"] for r in results}
    assert len(collectives) == 1
    if path == "one_sync":
        assert collectives == {0}, "under DDP the flags ride in the gradient all-reduce: no collective of their own"
    if path == "accumulate":
        assert collectives == {10}, "one collective per micro-batch, as without notices"


def test_without_a_trainer_or_a_group_the_notice_is_this_ranks_own():
    guard = nan_guard.NonFiniteGuard()
    assert guard.any_rank_bad([torch.tensor(1.0)]) is False and not guard.stop_agreed
    guard.notice = lambda: True
    assert guard.agree_step(torch.tensor(False), None) == (False, False)
    assert guard.stop_agreed
