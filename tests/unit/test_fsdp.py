"""ESPnetLightningModule under real 2-process FSDP (gloo, CPU): the NaN consensus holds on sharded weights.

PyTorch's FSDP refuses CPU devices unless it is given one explicitly, which Lightning's
FSDPStrategy (the base of Ray's RayFSDPStrategy) never does; :class:`CPUFSDP` passes it, and
otherwise wraps the model exactly as Lightning does. espnet3 itself runs FSDP on GPU workers only.
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from ddp_harness import run_ddp
from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from toy_models import Regressor, Trace, loader, make_trainer, regression_batches
from paths import TINY

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


def _train(model_cls, rank, poison_at):
    torch.manual_seed(0)
    module = ESPnetLightningModule(model_cls(), ADAM)
    trace = Trace()
    batches = regression_batches(6, seed=rank, poison_at=poison_at if rank == 0 else set())
    _fsdp_trainer([trace]).fit(module, loader(batches))
    return {"shards": [t["lin"] for t in trace.params], "skipped_batches": module.nan_guard.total_skips,
            "skipped_steps": module.skipped_steps}


def _both(rank, world_size, out_dir):
    """Both scenarios in the same two processes (starting them is most of the cost)."""
    return {"nan_loss": _train(Regressor, rank, {2, 4}), "nan_grad": _train(NaNGradRegressor, rank, {3})}


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    results = run_ddp(_both, tmp_path_factory.mktemp("fsdp"))
    for result in results:
        assert "ok" in result, result.get("traceback")
    return [result["ok"] for result in results]


def _unchanged_steps(shards: list[torch.Tensor]) -> set[int]:
    return {step for step in range(1, len(shards)) if torch.equal(shards[step - 1], shards[step])}


def test_nan_loss_on_one_rank_skips_the_batch_on_every_rank_under_fsdp(fsdp_runs):
    for rank in fsdp_runs:
        assert _unchanged_steps(rank["nan_loss"]["shards"]) == {2, 4}
        assert rank["nan_loss"]["skipped_batches"] == 2
    sizes = [rank["nan_loss"]["shards"][0].numel() for rank in fsdp_runs]
    assert sum(sizes) == 5 and min(sizes) > 0  # the 5 weights really are split across the ranks


def test_non_finite_gradient_in_one_ranks_shard_skips_the_step_on_every_rank(fsdp_runs):
    """rank 0's infinite bias gradient lands in one rank's shard only; both must skip, or shards diverge."""
    for rank in fsdp_runs:
        assert _unchanged_steps(rank["nan_grad"]["shards"]) == {3}
        assert rank["nan_grad"]["skipped_steps"] == 1 and rank["nan_grad"]["skipped_batches"] == 0


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="Ray's FSDP strategy runs on GPU workers: needs 2 GPUs")
def test_tiny_asr_trains_with_rays_fsdp_strategy_on_two_gpus(tmp_path, ray_cluster):
    """The product path (RayFSDPStrategy, nccl, full-state checkpoints averaged on the driver)."""

    from espnet3 import launch

    tiny = TINY
    data = tmp_path / "data"
    assert launch.main([
        "--config", str(tiny), "--num-gpus", "2", f"exp_dir={tmp_path}/exp", f"data.train={data}/train",
        f"data.valid={data}/valid", f"data.test.test={data}/test", "trainer.strategy=fsdp", "--stages", "train",
    ]) == 0
    assert (tmp_path / "exp" / "valid.loss.ave_2best.pth").is_file()
