"""A training step makes one host sync in espnet3's code, so a GPU never waits on the CPU twice a step.

Counted on CPU by wrapping every Tensor method that copies a value to Python (``item``,
``tolist``, ``bool``, ``float``, ``int``) and attributing each call to the frame that made it.
"""

from __future__ import annotations

import collections
import traceback
from pathlib import Path

import lightning as L
import pytest
import torch

import espnet3
from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from toy_models import Regressor, loader, make_trainer, regression_batches

ESPNET3 = str(Path(espnet3.__file__).parent)
TO_HOST = ("item", "tolist", "__bool__", "__float__", "__int__")


class InfGrad(torch.autograd.Function):
    """Identity whose backward is infinite where ``poison > 0`` (decided on the device)."""

    @staticmethod
    def forward(ctx, x, poison):
        ctx.save_for_backward(poison)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        (poison,) = ctx.saved_tensors
        return torch.where(poison > 0, grad * float("inf"), grad), None


class InfGradRegressor(Regressor):
    """A finite loss whose gradient is infinite on poisoned batches (a skipped step, not batch)."""

    def forward(self, x, y, poison):
        loss, stats, weight = super().forward(x, y, torch.zeros(()))
        return InfGrad.apply(loss, poison), stats, weight


@pytest.fixture
def syncs(monkeypatch):
    """Counts host syncs made by espnet3's code between each batch's start and end."""
    counts: collections.Counter = collections.Counter()
    window = {"batch": None}

    def wrap(name):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, **kwargs):
            if window["batch"] is not None:
                caller = traceback.extract_stack(limit=2)[0]
                if caller.filename.startswith(ESPNET3):
                    counts[window["batch"]] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    for name in TO_HOST:
        wrap(name)

    class Window(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            window["batch"] = batch_idx

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            window["batch"] = None

    return counts, Window()


@pytest.mark.parametrize("model", ["nan loss", "inf gradient"])
def test_every_step_syncs_once_whether_it_trains_or_skips(syncs, model):
    counts, window = syncs
    module = ESPnetLightningModule(
        Regressor() if model == "nan loss" else InfGradRegressor(), {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}}
    )
    make_trainer([window]).fit(module, loader(regression_batches(6, 0, poison_at={2, 3})))
    assert [counts[i] for i in range(6)] == [1] * 6
    skipped = (module.nan_guard.total_skips, module.skipped_steps)
    assert skipped == ((2, 0) if model == "nan loss" else (0, 2)), "the skips were decided as before"
