"""The NaN guard on a real device: skips, optimizer state and the limit exactly as on CPU.

    python -m benchmarks.gpu_nan_check [--accelerator gpu] [--precision bf16-mixed]

Trains ``tests/toy_models``-style linear regression with ``ESPnetLightningModule`` under Lightning on
one device: NaN losses at chosen steps, an infinite gradient at another, then a run of NaN losses
that must stop at ``max_nan_batches``. Prints one JSON object with ``ok`` and what was seen.
"""

from __future__ import annotations

import argparse
import json

import lightning as L
import torch
from torch import nn

from espnet3.components.modeling.lightning_module import ESPnetLightningModule
from espnet3.components.modeling.nan_guard import NaNLimitError

NAN_AT, INF_GRAD_AT, STEPS = {2, 5}, {7}, 10


class InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, poison):
        ctx.save_for_backward(poison)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        (poison,) = ctx.saved_tensors
        return torch.where(poison > 1, grad * float("inf"), grad), None


class Poisoned(nn.Module):
    """``poison`` 1: a NaN loss; 2: a finite loss with an infinite gradient."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x, y, poison):
        loss = ((self.lin(x).squeeze(-1) - y) ** 2).mean().float()
        loss = torch.where(poison == 1, torch.full_like(loss, float("nan")), loss)
        return InfGrad.apply(loss, poison), {"loss": loss.detach()}, torch.tensor(float(len(x)), device=x.device)


def batches(n: int, nan_at, inf_at) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(8, 4, generator=gen), "y": torch.randn(8, generator=gen),
             "poison": torch.tensor(1.0 if i in nan_at else 2.0 if i in inf_at else 0.0)} for i in range(n)]


class Trace(L.Callback):
    def __init__(self):
        self.weights = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.weights.append(module.model.lin.weight.detach().cpu().clone())


def fit(data, accelerator: str, precision: str, max_nan_batches: int = 100):
    torch.manual_seed(0)
    module = ESPnetLightningModule(Poisoned(), {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.05},
                                                "max_nan_batches": max_nan_batches})
    trace = Trace()
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[trace])
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    trainer.fit(module, loader)
    return module, trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args(argv)
    module, trace = fit(batches(STEPS, NAN_AT, INF_GRAD_AT), args.accelerator, args.precision)
    weights = trace.weights  # after each step
    unchanged = [i for i in range(1, STEPS) if torch.equal(weights[i - 1], weights[i])]
    adam_steps = int(module.optimizers().optimizer.state[module.model.lin.weight]["step"])
    seen = {"skipped_batches": module.nan_guard.total_skips, "skipped_steps": module.skipped_steps,
            "unchanged_steps": unchanged, "adam_steps": adam_steps}
    expected = {"skipped_batches": len(NAN_AT), "skipped_steps": len(INF_GRAD_AT),
                "unchanged_steps": sorted(NAN_AT | INF_GRAD_AT), "adam_steps": STEPS - len(NAN_AT | INF_GRAD_AT)}
    try:
        fit(batches(8, set(range(2, 8)), set()), args.accelerator, args.precision, max_nan_batches=3)
        limit = "no error"
    except NaNLimitError as err:
        limit = "3 consecutive" in str(err)
    ok = seen == expected and limit is True
    print(json.dumps({"ok": ok, "accelerator": args.accelerator, "precision": args.precision, "seen": seen,
                      "expected": expected, "nan_limit_raised": limit}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
