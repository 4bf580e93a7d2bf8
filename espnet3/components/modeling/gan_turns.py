"""ESPnet2's GAN models (``espnet2.gan_tts``, ``espnet2.gan_codec``) as espnet3 optimizer turns.

ESPnet2's GAN contract differs from espnet3's ``loss, stats, weight``: the model is called once
per turn, ``model(**batch, forward_generator=True|False)``, and returns a dict with ``loss``,
``stats``, ``weight`` and ``optim_idx`` (0 = generator, 1 = discriminator). ESPnet2's GAN
trainer runs the turns one after the other on the same batch and steps each turn's optimizer
before the next turn's forward: with the default discriminator-first order, the generator's
adversarial loss is scored by the discriminator just updated (its outputs are reused from the
cache of the first turn). Computing both losses first and stepping afterwards would change that,
so the Lightning module asks this class for one turn at a time and routes each to the optimizer
named after it (``optimizers: {discriminator: ..., generator: ...}``, in that order by default:
the order of the ``optimizers:`` block is the turn order). Configuring one of the two gives
ESPnet2's generator-only or discriminator-only training (freeze the other's parameters with
``model.freeze_param``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from espnet3.components.modeling.forward_contract import ForwardContract, ForwardOutput
from espnet3.components.modeling.optimization_spec import OptimizationStep

TURNS = ("generator", "discriminator")  # ESPnet2's optim_idx 0 and 1


def is_espnet2_gan(model: nn.Module) -> bool:
    """Whether ``model`` follows ESPnet2's GAN contract (``AbsGANESPnetModel``)."""
    try:
        from espnet3.utils.espnet2_imports import import_espnet2

        base = import_espnet2("espnet2.train.abs_gan_espnet_model").AbsGANESPnetModel
    except ImportError:  # pragma: no cover - espnet is a hard dependency
        return False
    return isinstance(model, base)


class GANTurns:
    """One ESPnet2 GAN turn at a time, as a checked :class:`ForwardOutput` with one OptimizationStep.

    Args:
        model: the ESPnet2 GAN model.
        order: the turns to run per batch, in order (the configured optimizer names).
        contract: checks each turn's stats like any other model's.
    """

    def __init__(self, model: nn.Module, order: Sequence[str], contract: ForwardContract):
        unknown = [name for name in order if name not in TURNS]
        if unknown or not order:
            raise ValueError(
                f"{type(model).__name__} is an ESPnet2 GAN model: `optimizers` must be named after its turns "
                f"({', '.join(TURNS)}), in turn order; got {list(order)}. ESPnet2's `optim`/`scheduler` are "
                "the generator's, `optim2`/`scheduler2` the discriminator's."
            )
        self.model = model
        self.order = tuple(order)
        self.contract = contract

    def turn(self, batch: Mapping[str, Any], name: str) -> ForwardOutput:
        """Run ``name``'s forward on ``batch``; its loss comes back as ``OptimizationStep(loss, name)``."""
        out = self.model(**batch, forward_generator=name == "generator")
        if not isinstance(out, Mapping) or not {"loss", "stats", "weight"} <= set(out):
            raise TypeError(
                f"{type(self.model).__name__}.forward(forward_generator=...) must return ESPnet2's GAN dict "
                f"(loss, stats, weight, optim_idx); got {type(out).__name__}"
            )
        optim_idx = out.get("optim_idx")
        if optim_idx is not None:
            index = int(torch.as_tensor(optim_idx).reshape(-1)[0])
            if TURNS[index] != name:
                raise TypeError(
                    f"{type(self.model).__name__} returned optim_idx {index} ({TURNS[index]}) for the {name} turn"
                )
        loss = out["loss"]
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError(f"the {name} turn of {type(self.model).__name__} must return a scalar loss tensor")
        return ForwardOutput(
            loss=None,
            losses=[OptimizationStep(loss.reshape(()), name)],
            stats=self.contract.check_stats(out["stats"]),
            weight=self.contract.check_weight(out["weight"]),
        )

    def end_batch(self) -> None:
        """Drop generator outputs cached for a next turn of the same batch.

        ESPnet2's GAN models with ``cache_generator_outputs`` keep the first turn's generator
        output for the second (``_cache``) and clear it there; with one turn per batch
        (generator- or discriminator-only training) the next batch would reuse a stale output
        whose graph is gone. ESPnet2's trainer always runs both turns and never needs this.
        Only those models: other modules use the name for caches of their own (JETS's alignment
        module keeps its beta-binomial priors in a ``_cache`` dict).
        """
        for module in self.model.modules():
            if hasattr(module, "cache_generator_outputs") and getattr(module, "_cache", None) is not None:
                module._cache = None
