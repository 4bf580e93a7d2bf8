"""ema: the moving average is what torch's EMA says, survives a resume, and use_for picks the weights."""

from __future__ import annotations

import lightning as L
import torch

from espnet3.components.ema import EMASpec
from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from espnet3.export import load_model_state
from toy_models import Regressor, Trace, loader, make_trainer, regression_batches

ADAM = {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.05}}


def _module() -> ESPnetLightningModule:
    torch.manual_seed(0)
    return ESPnetLightningModule(Regressor(), ADAM)


def _weights(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.model.parameters()]).clone()


def test_the_average_starts_at_start_step_and_follows_the_ema_formula():
    spec = EMASpec(decay=0.8, start_step=2, use_for="none")
    module, trace, ema = _module(), Trace(), spec.callback()
    make_trainer([trace, ema]).fit(module, loader(regression_batches(6, seed=0)))
    trained = [torch.cat([t["lin"]]) for t in trace.params]
    expected = trained[1]  # steps 0 and 1 copy the weights
    for weights in trained[2:]:
        expected = 0.8 * expected + 0.2 * weights
    average = torch.cat([p.detach().reshape(-1) for p in ema._average_model.module.model.parameters()])
    torch.testing.assert_close(average, expected)
    torch.testing.assert_close(_weights(module), trained[-1])  # use_for none: trained weights stay


class _SaveAfterFirstEpoch(L.Callback):
    """Saves during training, as espnet3's report callback does (after ``fit``, Lightning's EMA
    has already copied the average over the trained weights)."""

    def __init__(self, path):
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)


def _fit_epochs(epochs: int, ckpt_path=None, spec=EMASpec(decay=0.7), callbacks=()):
    module, ema = _module(), spec.callback()
    trainer = make_trainer([ema, *callbacks], max_epochs=epochs)
    trainer.fit(module, loader(regression_batches(4, seed=1)), ckpt_path=ckpt_path)
    return module, ema, trainer


def test_a_resumed_run_has_the_same_average_as_an_uninterrupted_one(tmp_path):
    whole, whole_ema, _ = _fit_epochs(2, callbacks=[_SaveAfterFirstEpoch(tmp_path / "epoch1.ckpt")])
    resumed, resumed_ema, _ = _fit_epochs(2, ckpt_path=tmp_path / "epoch1.ckpt")
    torch.testing.assert_close(_weights(resumed), _weights(whole))  # use_for export: the EMA at the end
    for a, b in zip(resumed_ema._average_model.parameters(), whole_ema._average_model.parameters()):
        torch.testing.assert_close(a, b)


class _ValidationWeights(L.Callback):
    def __init__(self):
        self.seen = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.seen.append(_weights(pl_module))


def test_use_for_export_validates_the_average_and_none_the_trained_weights():
    for use_for in ("export", "none"):
        module, ema, probe = _module(), EMASpec(decay=0.5, use_for=use_for).callback(), _ValidationWeights()
        batches = loader(regression_batches(3, seed=2))
        make_trainer([ema, probe], limit_val_batches=1).fit(module, batches, batches)
        average = torch.cat([p.detach().reshape(-1) for p in ema._average_model.module.model.parameters()])
        if use_for == "export":
            torch.testing.assert_close(probe.seen[-1], average)
        else:
            torch.testing.assert_close(probe.seen[-1], _weights(module))
            assert not torch.equal(probe.seen[-1], average)


def test_a_checkpoint_holds_both_weights_and_export_picks_one(tmp_path):
    module, ema, trainer = _fit_epochs(1, spec=EMASpec(decay=0.5, use_for="none"))
    trainer.save_checkpoint(tmp_path / "last.ckpt")  # use_for none: the trained weights stay in place
    trained = load_model_state(tmp_path / "last.ckpt", "trained")
    average = load_model_state(tmp_path / "last.ckpt", "ema")
    torch.testing.assert_close(trained["lin.weight"], module.model.lin.weight.detach())
    torch.testing.assert_close(average["lin.weight"], ema._average_model.module.model.lin.weight.detach())
    assert not torch.equal(trained["lin.weight"], average["lin.weight"])
