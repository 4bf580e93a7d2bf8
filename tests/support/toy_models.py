"""Tiny models and loops shared by the Lightning-module tests (importable by spawned ranks)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn

from espnet3.components.modeling.optimization_spec import OptimizationStep


class Regressor(nn.Module):
    """Linear regression; a batch with ``poison > 0`` returns a NaN loss."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x, y, poison):
        loss = ((self.lin(x).squeeze(-1) - y) ** 2).mean()
        loss = torch.where(poison > 0, torch.full_like(loss, float("nan")), loss)
        return loss, {"loss": loss.detach()}, torch.tensor(float(len(x)))


def regression_batches(n: int, seed: int, poison_at: set[int] = frozenset()) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "x": torch.randn(8, 4, generator=gen),
            "y": torch.randn(8, generator=gen),
            "poison": torch.tensor(1.0 if i in poison_at else 0.0),
        }
        for i in range(n)
    ]


class GAN(nn.Module):
    """A generator and a discriminator; ``which`` picks the OptimizationSteps returned."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = nn.Linear(2, 2)
        self.discriminator = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))

    def forward(self, real, z, which):
        fake = self.generator(z)
        bce = nn.functional.binary_cross_entropy_with_logits
        d_real = self.discriminator(real)
        d_fake = self.discriminator(fake.detach())
        d_loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        g_out = self.discriminator(fake)
        g_loss = bce(g_out, torch.ones_like(g_out))
        steps = {
            0: [OptimizationStep(g_loss, "generator"), OptimizationStep(d_loss, "discriminator")],
            1: [OptimizationStep(d_loss, "discriminator")],
            2: [OptimizationStep(g_loss, "generator")],
        }[int(which)]
        return steps, {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}, len(real)


def gan_batches(whiches: list[int], seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {"real": torch.randn(8, 2, generator=gen) + 3, "z": torch.randn(8, 2, generator=gen), "which": torch.tensor(w)}
        for w in whiches
    ]


def gan_config(**overrides) -> dict:
    config = {
        "optimizers": {
            "generator": {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01}, "params": "generator"},
            "discriminator": {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01}, "params": ["discriminator"]},
        }
    }
    for name, extra in overrides.items():
        config["optimizers"][name].update(extra)
    return config


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for p in module.parameters()])


class Trace(L.Callback):
    """Parameters (per named top-level module) after every training batch."""

    def __init__(self) -> None:
        self.params: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.params.append({name: flat(child) for name, child in pl_module.model.named_children()})


def make_trainer(callbacks=(), ddp: dict | None = None, **kwargs) -> L.Trainer:
    strategy = "auto"
    devices = 1
    if ddp is not None:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo", **ddp)
        devices = 2
    defaults = dict(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        max_epochs=1,
        callbacks=list(callbacks),
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def loader(batches: list[dict]) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(batches, batch_size=None)


def save_trace(trace: Trace, out_dir: Path, rank: int) -> None:
    torch.save(trace.params, out_dir / f"trace{rank}.pt")


def _espnet2_gan_base():
    from espnet3.utils.espnet2_imports import import_espnet2

    return import_espnet2("espnet2.train.abs_gan_espnet_model").AbsGANESPnetModel


class ESPnet2StyleGAN(_espnet2_gan_base()):
    """ESPnet2's GAN contract in miniature: ``forward(..., forward_generator)`` -> dict with optim_idx.

    Like ESPnet2's GAN models with ``cache_generator_outputs``, the first turn of a batch computes
    the generator output and the second turn reuses it. Each generator turn records the
    discriminator's parameters it saw, so tests can check the turn came after the other's update.
    ``poison`` (0: none, 1: generator turn, 2: discriminator turn) makes that turn's loss NaN.
    """

    def __init__(self) -> None:
        super().__init__()
        self.generator = nn.Linear(2, 2)
        self.discriminator = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
        self.seen_by_generator: list[torch.Tensor] = []
        self.cache_generator_outputs = True
        self._cache = None

    def forward(self, real, z, poison, forward_generator: bool = True):
        bce = nn.functional.binary_cross_entropy_with_logits
        fake = self._cache if self._cache is not None else self.generator(z)
        self._cache = None if self._cache is not None else fake
        if forward_generator:
            self.seen_by_generator.append(flat(self.discriminator))
            out = self.discriminator(fake)
            loss = bce(out, torch.ones_like(out)) + ((fake - real) ** 2).mean()
            stats = {"generator_loss": loss.detach()}
        else:
            d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
            loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
            stats = {"discriminator_loss": loss.detach()}
        if int(poison) == (1 if forward_generator else 2):
            loss = loss * float("nan")
        return {"loss": loss, "stats": stats, "weight": torch.tensor([len(real)]),
                "optim_idx": 0 if forward_generator else 1}

    def collect_feats(self, **batch):
        return {}


def espnet2_gan_batches(n: int, seed: int, poison: dict[int, int] | None = None) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    poison = poison or {}
    return [
        {"real": torch.randn(8, 2, generator=gen) + 3, "z": torch.randn(8, 2, generator=gen),
         "poison": torch.tensor(poison.get(i, 0))}
        for i in range(n)
    ]


def espnet2_gan_config(order=("discriminator", "generator"), scheduler: bool = False) -> dict:
    optimizers = {name: {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01}, "params": [name]}
                  for name in order}
    config = {"optimizers": optimizers}
    if scheduler:
        config["schedulers"] = {
            name: {"scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 2, "gamma": 0.5},
                   "interval": "step"}
            for name in order
        }
    return config
