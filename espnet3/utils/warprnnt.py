"""warp-transducer's ``warprnnt_pytorch.RNNTLoss``, computed by torchaudio's ``rnnt_loss``.

ESPnet2's transducer models (``espnet2.asr_transducer``, and ``espnet2.asr`` with a transducer
decoder) import their loss from warp-transducer's PyTorch binding, which is built from source and
is not on PyPI: without it ESPnet2's ASR model with a joint network fails to build and its
transducer model exits at its first loss. So egs3's mini_an4 recipe, whose default
``training.yaml`` is a transducer, could not train from a pip install. torchaudio, already a
dependency, ships the same loss (Graves 2012) with the log-softmax fused, as warp-transducer's
binding applies it. Where ``warprnnt_pytorch`` cannot be imported, :func:`install` registers this
module under that name, so ESPnet2's own ``from warprnnt_pytorch import RNNTLoss`` finds it; a real
warp-transducer, when installed, is used instead.
"""

from __future__ import annotations

import importlib.util
import sys

import torch

NAME = "warprnnt_pytorch"
REDUCTIONS = ("mean", "sum", "none")


class RNNTLoss(torch.nn.Module):
    """``warprnnt_pytorch.RNNTLoss(blank, reduction, fastemit_lambda)``: the transducer loss of
    joint-network logits ``(B, T, U + 1, V)`` for targets ``(B, U)``; ``mean`` averages over the
    batch, as warp-transducer does."""

    def __init__(self, blank: int = 0, reduction: str = "mean", fastemit_lambda: float = 0.0):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"RNNTLoss reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        if fastemit_lambda:
            raise ValueError(
                f"fastemit_lambda={fastemit_lambda}: FastEmit needs warp-transducer's own loss, which is not "
                "installed (espnet3 computes the transducer loss with torchaudio's rnnt_loss, which has no "
                "FastEmit). Set the model's fastemit_lambda to 0, or install warp-transducer's "
                "pytorch_binding (github.com/HawkAaron/warp-transducer)"
            )
        self.blank = blank
        self.reduction = reduction

    def forward(self, acts: torch.Tensor, labels: torch.Tensor, act_lens: torch.Tensor,
                label_lens: torch.Tensor) -> torch.Tensor:
        import torchaudio.functional

        return torchaudio.functional.rnnt_loss(
            acts, labels.int(), act_lens.int(), label_lens.int(), blank=self.blank, reduction=self.reduction,
        )


def install() -> None:
    """Stand in for ``warprnnt_pytorch`` in this process, unless a real one can be imported."""
    if NAME in sys.modules or importlib.util.find_spec(NAME) is not None:
        return
    sys.modules[NAME] = sys.modules[__name__]
