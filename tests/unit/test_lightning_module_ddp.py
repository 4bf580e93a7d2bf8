"""ESPnetLightningModule under real 2-process Lightning DDP (gloo): consensus and routing."""

from __future__ import annotations

import pytest
import torch

from ddp_harness import run_ddp
from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from toy_models import GAN, Regressor, Trace, gan_batches, gan_config, loader, make_trainer, regression_batches

ADAM = {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.05}}
NAN_STEPS = {1, 3, 4, 7}


def _nan_on_rank1(rank, world_size, out_dir):
    torch.manual_seed(0)
    module = ESPnetLightningModule(Regressor(), ADAM)
    trace = Trace()
    batches = regression_batches(10, seed=rank, poison_at=NAN_STEPS if rank == 1 else set())
    make_trainer([trace], ddp={}).fit(module, loader(batches))
    return {"trace": [t["lin"] for t in trace.params], "skips": module.nan_guard.total_skips,
            "adam_steps": module.optimizers().optimizer.state[module.model.lin.weight]["step"].item()}


def test_nan_on_one_rank_skips_on_every_rank(tmp_path):
    results = run_ddp(_nan_on_rank1, tmp_path)
    for rank, result in enumerate(results):
        assert "ok" in result, result.get("traceback")
        trace = result["ok"]["trace"]
        before = [torch.cat([p.reshape(-1) for p in ESPnetLightningModule(_seeded(), ADAM).model.parameters()])]
        steps = before + trace
        for step in range(10):
            unchanged = torch.equal(steps[step], steps[step + 1])
            assert unchanged == (step in NAN_STEPS), f"rank {rank} step {step}"
        assert result["ok"]["skips"] == len(NAN_STEPS)
        assert result["ok"]["adam_steps"] == 10 - len(NAN_STEPS)
    assert torch.equal(results[0]["ok"]["trace"][-1], results[1]["ok"]["trace"][-1])


def _seeded():
    torch.manual_seed(0)
    return Regressor()


def _nan_forever_on_rank1(rank, world_size, out_dir):
    module = ESPnetLightningModule(Regressor(), ADAM)
    batches = regression_batches(150, seed=rank, poison_at=set(range(20, 150)) if rank == 1 else set())
    trainer = make_trainer(ddp={})
    try:
        trainer.fit(module, loader(batches))
    except RuntimeError as exc:
        return {"message": str(exc), "batch_idx": trainer.fit_loop.epoch_loop.batch_idx}
    return {"message": None}


@pytest.mark.timeout(240)
def test_consecutive_nan_limit_fails_every_rank_at_the_same_step(tmp_path):
    results = run_ddp(_nan_forever_on_rank1, tmp_path, timeout=180)
    for result in results:
        assert "ok" in result, result.get("traceback")
        assert "100 consecutive batches" in result["ok"]["message"]
        assert "learning rate" in result["ok"]["message"]
    assert results[0]["ok"]["batch_idx"] == results[1]["ok"]["batch_idx"] == 20 + 99


def _gan(rank, world_size, out_dir):
    torch.manual_seed(0)
    module = ESPnetLightningModule(GAN(), gan_config())
    trace = Trace()
    whiches = [0, 1, 1, 0, 2, 0]
    make_trainer([trace], ddp=module.ddp_kwargs()).fit(module, loader(gan_batches(whiches, seed=rank)))
    return {"trace": trace.params, "whiches": whiches,
            "updates": {k: v.update_step for k, v in module.router.state.items()}}


def test_gan_routing_under_ddp(tmp_path):
    results = run_ddp(_gan, tmp_path)
    for result in results:
        assert "ok" in result, result.get("traceback")
    trace, whiches = results[0]["ok"]["trace"], results[0]["ok"]["whiches"]
    for step in range(1, len(whiches)):
        gen_same = torch.equal(trace[step - 1]["generator"], trace[step]["generator"])
        disc_same = torch.equal(trace[step - 1]["discriminator"], trace[step]["discriminator"])
        assert gen_same == (whiches[step] == 1), step
        assert disc_same == (whiches[step] == 2), step
    assert results[0]["ok"]["updates"] == {"generator": 4, "discriminator": 5}
    for a, b in zip(results[0]["ok"]["trace"], results[1]["ok"]["trace"]):
        assert torch.equal(a["generator"], b["generator"]) and torch.equal(a["discriminator"], b["discriminator"])
