"""ESPnetLightningModule under real 2-process FSDP (gloo, CPU): the NaN consensus holds on sharded weights.

PyTorch's FSDP refuses CPU devices unless it is given one explicitly, which Lightning's
FSDPStrategy (the base of Ray's RayFSDPStrategy) never does; :class:`CPUFSDP` passes it, and
otherwise wraps the model exactly as Lightning does. espnet3 itself runs FSDP on GPU workers only.
"""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import FSDPStrategy

from ddp_harness import run_ddp
from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from toy_models import Regressor, Trace, loader, make_trainer, regression_batches

ADAM = {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.05}}


class CPUFSDP(FSDPStrategy):
    def _setup_model(self, model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(
            module=model, sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"), **self.kwargs
        )


def _fsdp_trainer(callbacks):
    return make_trainer(callbacks, devices=2, strategy=CPUFSDP(process_group_backend="gloo"))


class NaNGradRegressor(Regressor):
    """Finite loss everywhere; a poisoned batch adds sqrt(b - b) = 0, whose gradient is infinite, to ``lin.bias``."""

    def forward(self, x, y, poison):
        loss, stats, weight = super().forward(x, y, torch.zeros(()))
        if poison.item() > 0:
            loss = loss + torch.sqrt(self.lin.bias - self.lin.bias.detach()).sum()
        return loss, stats, weight


def _train(rank, world_size, out_dir, model_cls, poison_at):
    torch.manual_seed(0)
    module = ESPnetLightningModule(model_cls(), ADAM)
    trace = Trace()
    batches = regression_batches(6, seed=rank, poison_at=poison_at if rank == 0 else set())
    _fsdp_trainer([trace]).fit(module, loader(batches))
    return {"shards": [t["lin"] for t in trace.params], "skipped_batches": module.nan_guard.total_skips,
            "skipped_steps": module.skipped_steps}


def _unchanged_steps(shards: list[torch.Tensor]) -> set[int]:
    return {step for step in range(1, len(shards)) if torch.equal(shards[step - 1], shards[step])}


def test_nan_loss_on_one_rank_skips_the_batch_on_every_rank_under_fsdp(tmp_path):
    results = run_ddp(_train, tmp_path, model_cls=Regressor, poison_at={2, 4})
    for result in results:
        assert "ok" in result, result.get("traceback")
        assert _unchanged_steps(result["ok"]["shards"]) == {2, 4}
        assert result["ok"]["skipped_batches"] == 2
    sizes = [results[r]["ok"]["shards"][0].numel() for r in range(2)]
    assert sum(sizes) == 5 and min(sizes) > 0  # the 5 weights really are split across the ranks


def test_non_finite_gradient_in_one_ranks_shard_skips_the_step_on_every_rank(tmp_path):
    """rank 0's infinite bias gradient lands in one rank's shard only; both must skip, or shards diverge."""
    results = run_ddp(_train, tmp_path, model_cls=NaNGradRegressor, poison_at={3})
    for result in results:
        assert "ok" in result, result.get("traceback")
        assert _unchanged_steps(result["ok"]["shards"]) == {3}
        assert result["ok"]["skipped_steps"] == 1 and result["ok"]["skipped_batches"] == 0
