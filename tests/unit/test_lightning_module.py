"""ESPnetLightningModule in one process: forward contract, skipping, optimizer routing, resume."""

from __future__ import annotations


import lightning as L
import pytest
import torch
from torch import nn

from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from espnet3.components.modeling.optimization_spec import OptimizationPlan, OptimizationStep
from toy_models import GAN, Regressor, Trace, flat, gan_batches, gan_config, loader, make_trainer, regression_batches

ADAM = {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.05}}
SGD1 = {"optimizer": {"_target_": "torch.optim.SGD", "lr": 1.0}}


class Returns(nn.Module):
    """Returns whatever the test hands it, with a trainable parameter in the graph."""

    def __init__(self, make):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.make = make

    def forward(self, x):
        return self.make(self.w * x)


def _step(make, config=ADAM, batch=None):
    module = ESPnetLightningModule(Returns(make), config)
    return module.training_step(batch or (["utt1"], {"x": torch.tensor(2.0)}), 0)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda l: (l, {}), r"\(a 3-tuple\); got a tuple of length 2"),
        (lambda l: l, r"\(a 3-tuple\); got Tensor"),
        (lambda l: (torch.stack([l, l]), {}, 1), r"scalar loss tensor.*shape=\(2,\)"),
        (lambda l: (l.detach(), {}, 1), "does not require grad"),
        (lambda l: (l, [l], 1), "dict of statistics"),
        (lambda l: (l, {}, "eight"), "weight"),
        (lambda l: (l, {"acc": "high"}, 1), r"stats\['acc'\]"),
        (lambda l: ([OptimizationStep(l, "g")], {}, 1), "single `optimizer`"),
    ],
)
def test_forward_contract_errors_say_what_was_returned(make, match):
    with pytest.raises(TypeError, match=match):
        _step(make)


def test_multi_path_requires_optimization_steps():
    config = {"optimizers": {"g": {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}, "params": "w"}}}
    with pytest.raises(TypeError, match="OptimizationStep"):
        _step(lambda l: (l, {}, 1), config)


def test_shape_one_loss_none_and_float_stats_are_accepted():
    module = ESPnetLightningModule(Returns(lambda l: (l.reshape(1), {"acc": None, "cer": 0.5}, None)), ADAM)
    out = module._forward({"x": torch.tensor(2.0)}, training=True)
    assert out.loss.shape == () and out.stats == {"cer": 0.5} and out.weight is None


def test_attached_stat_is_detached_with_one_warning():
    module = ESPnetLightningModule(Returns(lambda l: (l, {"loss": l}, 1)), ADAM)
    with pytest.warns(UserWarning, match=r"stats\['loss'\] still attached") as record:
        out = module._forward({"x": torch.tensor(2.0)}, training=True)
        module._forward({"x": torch.tensor(2.0)}, training=True)
    assert len([w for w in record if "still attached" in str(w.message)]) == 1
    assert not out.stats["loss"].requires_grad


def test_stats_are_logged_as_train_and_valid_keys():
    module = ESPnetLightningModule(Regressor(), ADAM)
    trainer = make_trainer(max_epochs=1)
    trainer.fit(module, loader(regression_batches(4, 0)), loader(regression_batches(2, 1)))
    assert {"train/loss", "valid/loss", "train/skipped_batches"} <= set(trainer.callback_metrics)


def test_train_stats_are_logged_where_lightning_writes_logs_and_on_each_epochs_last_batch(tmp_path):
    """Logging every step cost ~0.1 ms per key and step (1.4x a bare module on a few-ms model):
    the loggers get the same rows as before, and epoch-end callbacks the epoch's last batch."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    class Losses(L.Callback):
        losses: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(float(outputs["loss"]))

    seen = Losses()
    module = ESPnetLightningModule(Regressor(), ADAM)
    trainer = make_trainer(callbacks=[seen], max_epochs=2, log_every_n_steps=2,
                           logger=CSVLogger(tmp_path, name="", version=""))
    trainer.fit(module, loader(regression_batches(5, 0)))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    logged = {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}
    assert list(logged) == [1, 3, 5, 7, 9]
    # Each row is the mean of every step since the previous row (the batches weigh the same):
    # none is lost, the first epoch's last batch (step 4) included.
    bounds = [-1, *logged]
    for start, end in zip(bounds, bounds[1:]):
        steps = seen.losses[start + 1: end + 1]
        assert logged[end] == pytest.approx(sum(steps) / len(steps))
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(logged[9])


def test_a_loss_whose_turns_miss_every_log_step_still_reaches_the_loggers(tmp_path):
    """A generator updated on batches 0, 2, 4 while the loggers write on 1, 3, 5: its loss and
    stats are logged there, each row the generator's latest turn, weighted as the batch."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    module = ESPnetLightningModule(GAN(), gan_config())
    trainer = make_trainer(max_epochs=1, log_every_n_steps=2, logger=CSVLogger(tmp_path, name="", version=""))
    trainer.fit(module, loader(gan_batches([2, 1, 2, 1, 2, 1], seed=0)))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    for key in ("train/generator/loss", "train/discriminator/loss", "train/g_loss", "train/d_loss",
                "train/generator/update_step"):
        assert len([r for r in rows if r.get(key)]) == 3, key


def test_train_stats_are_weighted_means_per_key_since_the_last_reset():
    from espnet3.components.modeling.train_stats import TrainStats

    stats = TrainStats()
    stats.add({"a": torch.tensor(1.0)}, 1.0)
    stats.add({"a": torch.tensor(3.0), "b": 5.0}, torch.tensor(3.0))
    assert {k: float(v) for k, v in stats.means(reset=False).items()} == {"a": 2.5, "b": 5.0}
    stats.add({"b": torch.tensor(1.0)}, 1.0)
    assert {k: float(v) for k, v in stats.means().items()} == {"a": 2.5, "b": 4.0}
    assert stats.means() == {}


@pytest.mark.parametrize(
    "config, match",
    [
        ({}, "No optimizer configured"),
        ({**ADAM, "optimizers": gan_config()["optimizers"]}, "Both `optimizer` and `optimizers`"),
        ({**ADAM, "schedulers": {}}, "`schedulers` .plural."),
        ({**ADAM, "scheduler_interval": "batch", "scheduler": {"_target_": "x.Y"}}, "scheduler_interval"),
        ({"optimizer": {"lr": 1}}, "_target_"),
        ({**gan_config(), "schedulers": {"critic": {"scheduler": {"_target_": "x.Y"}}}}, r"\['critic'\]"),
        ({**gan_config(), "trainer": {"gradient_clip_val": 1.0}}, "gradient_clip_val"),
        (gan_config(generator={"accum_grad_steps": 0}), "optimizers.generator.accum_grad_steps"),
        (gan_config(generator={"lr": 0.1}), r"Unknown key\(s\) \['lr'\] in `optimizers.generator`"),
    ],
)
def test_optimization_config_errors_name_the_key(config, match):
    with pytest.raises(ValueError, match=match):
        OptimizationPlan.from_config(config)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"generator": "generator", "discriminator": "discriminator.0"}, "not selected by any.*discriminator.2.weight"),
        ({"generator": "", "discriminator": "discriminator"}, "more than one optimizer"),
        ({"generator": ["generator", "gen"], "discriminator": "discriminator"}, None),
        ({"generator": "generator", "discriminator": ["discriminator", "disc"]}, None),
        ({"generator": "generator", "discriminator": "discriminator", "extra": "nothing"}, "extra.*matches no"),
    ],
)
def test_parameter_selection_errors_list_the_parameters(params, match):
    config = {"optimizers": {n: {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}, "params": p} for n, p in params.items()}}
    module = ESPnetLightningModule(GAN(), config)
    if match is None:
        module.configure_optimizers()  # unmatched extra prefixes inside a spec are fine
        return
    with pytest.raises(ValueError, match=match):
        module.configure_optimizers()


def test_prefixes_match_on_dot_boundaries():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(1, 1)
            self.enc2 = nn.Linear(1, 1)

    config = {"optimizers": {"a": {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}, "params": "enc"}}}
    with pytest.raises(ValueError, match="enc2.weight"):
        ESPnetLightningModule(Net(), config).configure_optimizers()


def test_optimizer_params_match_a_dotted_name_anywhere_as_upstream_does():
    """Upstream ESPnet3's `params: generator` selects `tts.generator.*` (a GAN TTS model's
    parameters sit under the task's `tts`); on dot boundaries, so never `tts.generator2.*`."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.tts = nn.ModuleDict({"generator": nn.Linear(1, 1), "discriminator": nn.Linear(1, 1)})

    opt = {"_target_": "torch.optim.SGD", "lr": 0.1}
    config = {"optimizers": {"generator": {"optimizer": opt, "params": "generator"},
                             "discriminator": {"optimizer": opt, "params": "discriminator"}}}
    net = Net()
    optimizers, _ = ESPnetLightningModule(net, config).configure_optimizers()
    owned = [{id(p) for group in o.param_groups for p in group["params"]} for o in optimizers]
    assert owned == [{id(p) for p in net.tts["generator"].parameters()},
                     {id(p) for p in net.tts["discriminator"].parameters()}]


def test_unknown_step_name_is_a_key_error_listing_names():
    module = ESPnetLightningModule(GAN(), gan_config())
    with pytest.raises(KeyError, match=r"'critic'.*\['discriminator', 'generator'\]"):
        module.router.check_names([OptimizationStep(torch.tensor(1.0), "critic")])


class SingleLossGAN(GAN):
    def forward(self, real, z, which):
        steps, stats, weight = super().forward(real, z, which)
        return sum(s.loss for s in steps), stats, weight


def test_freeze_param_keeps_parameters_fixed():
    torch.manual_seed(0)
    model = SingleLossGAN()
    module = ESPnetLightningModule(model, {**ADAM, "model": {"freeze_param": ["discriminator.0"]}})
    frozen, trained = flat(model.discriminator[0]), flat(model.discriminator[2])
    make_trainer().fit(module, loader(gan_batches([0, 0, 0], seed=0)))
    assert torch.equal(frozen, flat(model.discriminator[0]))
    assert not torch.equal(trained, flat(model.discriminator[2]))
    assert module.frozen_parameters == ["discriminator.0.bias", "discriminator.0.weight"]
    with pytest.raises(ValueError, match="model.freeze_param.*'decoder'"):
        ESPnetLightningModule(GAN(), {**ADAM, "model": {"freeze_param": ["decoder"]}})


class InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class InfGradRegressor(Regressor):
    def forward(self, x, y, poison):
        loss, stats, weight = super().forward(x, y, torch.tensor(0.0))
        return (InfGrad.apply(loss) if poison > 0 else loss), stats, weight


def test_non_finite_gradient_skips_the_update():
    model = InfGradRegressor()
    module = ESPnetLightningModule(model, ADAM)
    trace = Trace()
    trainer = make_trainer([trace])
    trainer.fit(module, loader(regression_batches(4, 0, poison_at={2})))
    assert torch.equal(trace.params[1]["lin"], trace.params[2]["lin"])
    assert not torch.equal(trace.params[2]["lin"], trace.params[3]["lin"])
    assert module.skipped_steps == 1 and trainer.callback_metrics["train/skipped_steps"] == 1
    assert module.nan_guard.total_skips == 0


def test_skipped_batch_leaves_accumulated_gradient_untouched():
    torch.manual_seed(0)
    batches = regression_batches(2, 0, poison_at={0})
    model = Regressor()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = make_trainer(accumulate_grad_batches=2)
    trainer.fit(ESPnetLightningModule(model, SGD1), loader(batches))
    reference = Regressor()
    reference.load_state_dict(start)
    loss, _, _ = reference(**batches[1])
    (loss / 2).backward()
    for name, param in reference.named_parameters():
        assert torch.allclose(model.state_dict()[name], param.detach() - param.grad, atol=1e-6)


def test_step_scheduler_does_not_advance_on_skipped_batches():
    config = {**ADAM, "scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1, "gamma": 0.5}}
    module = ESPnetLightningModule(Regressor(), config)
    make_trainer().fit(module, loader(regression_batches(4, 0, poison_at={1})))
    assert module.optimizers().param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**3)


def test_nan_counter_resets_after_a_good_batch_and_is_checkpointed():
    module = ESPnetLightningModule(Regressor(), {**ADAM, "max_nan_batches": 3})
    nan, ok = torch.tensor(float("nan")), torch.tensor(1.0)
    for loss in (nan, nan, ok, nan, nan):
        module.nan_guard.decide([loss])
    assert module.nan_guard.consecutive_skips == 2
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    restored = ESPnetLightningModule(Regressor(), {**ADAM, "max_nan_batches": 3})
    restored.on_load_checkpoint(checkpoint)
    assert restored.nan_guard.state_dict() == {"consecutive_skips": 2, "total_skips": 4}
    with pytest.raises(RuntimeError, match="3 consecutive batches"):
        restored.nan_guard.decide([nan])


def _gan_fit(whiches, config, callbacks=(), **trainer_kwargs):
    torch.manual_seed(0)
    module = ESPnetLightningModule(GAN(), config)
    trainer = make_trainer(list(callbacks), **trainer_kwargs)
    trainer.fit(module, loader(gan_batches(whiches, seed=0)))
    return module, trainer


def test_gan_optimizer_not_named_in_a_step_is_untouched():
    trace = Trace()
    module, _ = _gan_fit([0, 1, 1, 2], gan_config(), [trace])
    assert torch.equal(trace.params[0]["generator"], trace.params[2]["generator"])
    assert torch.equal(trace.params[2]["discriminator"], trace.params[3]["discriminator"])
    g_opt = module.optimizers()[0].optimizer
    assert all(state["step"].item() == 2 for state in g_opt.state.values())


def test_gan_clipping_bounds_the_update():
    sgd = {"optimizer": {"_target_": "torch.optim.SGD", "lr": 1.0}, "gradient_clip_val": 0.01}
    trace = Trace()
    torch.manual_seed(0)
    initial = flat(GAN().generator)
    _gan_fit([2, 2], gan_config(generator=sgd), [trace])
    steps = [initial] + [t["generator"] for t in trace.params]
    for before, after in zip(steps, steps[1:]):
        assert 0 < (after - before).norm() <= 0.01 + 1e-6


def test_gan_accumulation_and_step_every_n_iters():
    trace = Trace()
    config = gan_config(discriminator={"accum_grad_steps": 2}, generator={"step_every_n_iters": 3})
    module, _ = _gan_fit([0] * 6, config, [trace])
    disc = [t["discriminator"] for t in trace.params]
    gen = [t["generator"] for t in trace.params]
    assert [not torch.equal(a, b) for a, b in zip(disc, disc[1:])] == [True, False, True, False, True]
    assert [not torch.equal(a, b) for a, b in zip(gen, gen[1:])] == [False, True, False, False, True]
    assert {k: v.update_step for k, v in module.router.state.items()} == {"generator": 2, "discriminator": 3}


def test_gan_schedulers_step_on_their_interval():
    config = gan_config()
    config["schedulers"] = {
        "generator": {"scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1, "gamma": 0.5}},
        "discriminator": {
            "scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1, "gamma": 0.1},
            "interval": "epoch",
        },
    }
    module, _ = _gan_fit([0, 1, 0], config, max_epochs=2)
    g_opt, d_opt = (opt.optimizer for opt in module.optimizers())
    assert g_opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**4)  # 2 generator updates per epoch
    assert d_opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.1**2)


def test_gan_resume_restores_counters_and_update_steps(tmp_path):
    config = gan_config(discriminator={"accum_grad_steps": 2})
    module, trainer = _gan_fit([0, 0, 0], config)
    assert module.router.state_dict()["discriminator"] == {"accum_counter": 1, "windows": 1, "update_step": 1}
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    resumed = ESPnetLightningModule(GAN(), config)
    trainer = make_trainer(max_epochs=2)
    trainer.fit(resumed, loader(gan_batches([0, 0, 0], seed=0)), ckpt_path=tmp_path / "mid.ckpt")
    assert resumed.router.state_dict() == {
        "generator": {"accum_counter": 0, "windows": 6, "update_step": 6},
        "discriminator": {"accum_counter": 0, "windows": 3, "update_step": 3},
    }


def test_training_and_validation_steps_without_a_trainer_keep_upstreams_contract():
    """Upstream ESPnet3's unit tests (and users') call the steps on a module attached to no Trainer."""
    from espnet3.components.modeling.nan_guard import NaNLimitError

    module = ESPnetLightningModule(Regressor(), {**ADAM, "max_nan_batches": 3})
    good, bad = regression_batches(1, seed=0)[0], regression_batches(1, seed=0, poison_at={0})[0]
    loss = module.training_step(good, 0)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad and torch.isfinite(loss)
    assert module.training_step(bad, 1) is None
    assert module.training_step(good, 2) is not None  # a good batch resets the consecutive count
    assert torch.isfinite(module.validation_step(good, 0)) and module.validation_step(bad, 1) is None
    with pytest.raises(NaNLimitError):
        for i in range(3):
            assert module.training_step(bad, 3 + i) is None
    assert module.nan_guard.total_skips == 4


def test_multi_optimizer_training_step_without_a_trainer_returns_its_steps():
    module = ESPnetLightningModule(GAN(), gan_config())
    steps = module.training_step(gan_batches([0], seed=0)[0], 0)
    assert {step.name for step in steps} == {"generator", "discriminator"}
