"""ESPnet2 GAN models (forward_generator turns, optim_idx) trained through espnet3's routing."""

from __future__ import annotations

import pytest
import torch

from ddp_harness import run_ddp
from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from toy_models import (
    ESPnet2StyleGAN,
    Trace,
    espnet2_gan_batches,
    espnet2_gan_config,
    flat,
    loader,
    make_trainer,
)


def _train(rank, world_size, out_dir, order=("discriminator", "generator"), poison=None, steps=6, freeze=()):
    torch.manual_seed(0)
    model = ESPnet2StyleGAN()
    config = {**espnet2_gan_config(order), "model": {"freeze_param": list(freeze)}}
    module = ESPnetLightningModule(model, config)
    trace = Trace()
    poison = (poison or {}).get(rank, {})
    make_trainer([trace], ddp=module.ddp_kwargs()).fit(module, loader(espnet2_gan_batches(steps, rank, poison)))
    return {"trace": trace.params, "seen": model.seen_by_generator,
            "updates": {k: v.update_step for k, v in module.router.state.items()},
            "skips": module.nan_guard.total_skips}


def test_turns_follow_espnet2s_order_and_each_optimizer_steps_on_its_turn_only(tmp_path):
    results = run_ddp(_train, tmp_path)
    for result in results:
        assert "ok" in result, result.get("traceback")
    ok = results[0]["ok"]
    assert ok["updates"] == {"discriminator": 6, "generator": 6}
    # discriminator first: each generator turn sees the discriminator already updated on that batch
    for step, seen in enumerate(ok["seen"]):
        assert torch.equal(seen, ok["trace"][step]["discriminator"])
    for a, b in zip(results[0]["ok"]["trace"], results[1]["ok"]["trace"]):  # DDP kept the ranks equal
        assert torch.equal(a["generator"], b["generator"]) and torch.equal(a["discriminator"], b["discriminator"])


def test_generator_first_order_scores_the_generator_before_the_discriminator_moves(tmp_path):
    result = run_ddp(_train, tmp_path, order=("generator", "discriminator"))[0]
    ok = result["ok"]
    # generator first: the turn of batch k sees the discriminator as batch k-1 left it
    for step in range(1, len(ok["seen"])):
        assert torch.equal(ok["seen"][step], ok["trace"][step - 1]["discriminator"])


def test_generator_only_training_leaves_the_frozen_discriminator_alone(tmp_path):
    result = run_ddp(_train, tmp_path, order=("generator",), freeze=("discriminator",))[0]["ok"]
    assert result["updates"] == {"generator": 6}
    trace = result["trace"]
    assert all(torch.equal(t["discriminator"], trace[0]["discriminator"]) for t in trace)
    assert not torch.equal(trace[0]["generator"], trace[-1]["generator"])


def test_a_nan_turn_on_one_rank_skips_it_and_the_turns_after_it_on_every_rank(tmp_path):
    # rank 1: batch 2's discriminator turn is NaN (both turns skipped), batch 4's generator turn (G only)
    poison = {1: {2: 2, 4: 1}}
    results = run_ddp(_train, tmp_path, poison=poison)
    for result in results:
        assert "ok" in result, result.get("traceback")
        ok = result["ok"]
        trace = ok["trace"]
        assert torch.equal(trace[1]["discriminator"], trace[2]["discriminator"])
        assert torch.equal(trace[1]["generator"], trace[2]["generator"])
        assert not torch.equal(trace[3]["discriminator"], trace[4]["discriminator"])
        assert torch.equal(trace[3]["generator"], trace[4]["generator"])
        assert ok["updates"] == {"discriminator": 5, "generator": 4}
        assert ok["skips"] == 2
    assert torch.equal(results[0]["ok"]["trace"][-1]["generator"], results[1]["ok"]["trace"][-1]["generator"])


def _resume(rank, world_size, out_dir, epochs: int, per_epoch: int):
    """An uninterrupted run of ``epochs`` epochs vs one stopped after the first and resumed."""
    config = espnet2_gan_config(scheduler=True)
    batches = espnet2_gan_batches(per_epoch, rank)
    torch.manual_seed(0)
    straight = ESPnetLightningModule(ESPnet2StyleGAN(), config)
    make_trainer(ddp=straight.ddp_kwargs(), max_epochs=epochs).fit(straight, loader(batches))
    torch.manual_seed(0)
    first = ESPnetLightningModule(ESPnet2StyleGAN(), config)
    trainer = make_trainer(ddp=first.ddp_kwargs(), max_epochs=1)
    trainer.fit(first, loader(batches))
    ckpt = out_dir / "gan.ckpt"
    trainer.save_checkpoint(ckpt)
    torch.manual_seed(1)
    resumed = ESPnetLightningModule(ESPnet2StyleGAN(), config)
    make_trainer(ddp=resumed.ddp_kwargs(), max_epochs=epochs).fit(resumed, loader(batches), ckpt_path=ckpt)
    lrs = {name: opt.param_groups[0]["lr"] for name, opt in zip(resumed.plan.optimizers, resumed.optimizers())}
    straight_lrs = {name: opt.param_groups[0]["lr"] for name, opt in zip(straight.plan.optimizers, straight.optimizers())}
    return {"same": torch.equal(flat(straight.model), flat(resumed.model)), "lrs": lrs, "straight_lrs": straight_lrs,
            "updates": {k: v.update_step for k, v in resumed.router.state.items()}}


@pytest.mark.timeout(240)
def test_a_gan_run_resumes_with_both_optimizers_and_schedulers(tmp_path):
    results = run_ddp(_resume, tmp_path, epochs=2, per_epoch=3)
    for result in results:
        assert "ok" in result, result.get("traceback")
        ok = result["ok"]
        assert ok["same"], "resuming from the checkpoint diverged from the uninterrupted run"
        assert ok["lrs"] == ok["straight_lrs"] == {"discriminator": 0.01 * 0.5**3, "generator": 0.01 * 0.5**3}
        assert ok["updates"] == {"discriminator": 6, "generator": 6}


def test_an_espnet2_gan_model_needs_named_turn_optimizers():
    with pytest.raises(ValueError, match="ESPnet2 GAN model: configure `optimizers"):
        ESPnetLightningModule(ESPnet2StyleGAN(), {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.1}})
    with pytest.raises(ValueError, match=r"`optimizers` must be named after its turns \(generator, discriminator\)"):
        config = {"optimizers": {"gen": {"optimizer": {"_target_": "torch.optim.Adam"}, "params": ["generator"]},
                                 "disc": {"optimizer": {"_target_": "torch.optim.Adam"}, "params": ["discriminator"]}}}
        ESPnetLightningModule(ESPnet2StyleGAN(), config)


def test_end_of_batch_clears_only_the_gan_models_generator_cache():
    """ESPnet2's GAN models cache generator outputs in ``_cache``; other modules (JETS's alignment
    module) keep their own ``_cache`` dicts, which must survive every batch."""
    from espnet3.components.modeling.forward_contract import ForwardContract
    from espnet3.components.modeling.gan_turns import GANTurns

    model = ESPnet2StyleGAN()
    model.alignment = torch.nn.Module()
    model.alignment._cache = {(3, 5): torch.ones(3, 5)}
    model._cache = torch.zeros(2)
    GANTurns(model, ("discriminator", "generator"), ForwardContract("ESPnet2StyleGAN", multi=True)).end_batch()
    assert model._cache is None
    assert list(model.alignment._cache) == [(3, 5)]
