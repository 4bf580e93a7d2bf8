"""The transducer loss ESPnet2 takes from warp-transducer, computed by torchaudio when that is missing."""

from __future__ import annotations

import sys

import pytest
import torch

from espnet3.utils import warprnnt


def _reference_loss(logits: torch.Tensor, target: list[int], frames: int, blank: int) -> float:
    """The transducer loss by its definition (Graves 2012): -log of the sum over alignments,
    by the forward recursion over the (frame, emitted labels) lattice."""
    log_probs = logits.log_softmax(-1)
    alpha = torch.full((frames, len(target) + 1), float("-inf"), dtype=torch.float64)
    alpha[0, 0] = 0.0
    for t in range(frames):
        for u in range(len(target) + 1):
            if t == 0 and u == 0:
                continue
            paths = []
            if t > 0:
                paths.append(alpha[t - 1, u] + log_probs[t - 1, u, blank])
            if u > 0:
                paths.append(alpha[t, u - 1] + log_probs[t, u - 1, target[u - 1]])
            alpha[t, u] = torch.logsumexp(torch.stack(paths), 0)
    return float(-(alpha[frames - 1, len(target)] + log_probs[frames - 1, len(target), blank]))


def test_the_loss_is_the_transducer_loss_averaged_over_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    targets = torch.tensor([[1, 3], [2, 0]])
    frames, lengths = torch.tensor([5, 3]), torch.tensor([2, 1])
    reference = [_reference_loss(logits[0], [1, 3], 5, 0), _reference_loss(logits[1, :, :2], [2], 3, 0)]

    per_utterance = warprnnt.RNNTLoss(reduction="none")(logits.float(), targets, frames, lengths)
    assert per_utterance.tolist() == pytest.approx(reference, rel=1e-4)
    mean = warprnnt.RNNTLoss()(logits.float(), targets, frames, lengths)
    assert float(mean) == pytest.approx(sum(reference) / 2, rel=1e-4)  # warp-transducer's "mean": over the batch

    acts = logits.float().requires_grad_()
    warprnnt.RNNTLoss(blank=0)(acts, targets, frames, lengths).backward()
    assert torch.isfinite(acts.grad).all() and acts.grad.abs().sum() > 0


def test_fastemit_and_unknown_reductions_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="Set the model's fastemit_lambda to 0"):
        warprnnt.RNNTLoss(fastemit_lambda=0.01)
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none"):
        warprnnt.RNNTLoss(reduction="average")


def test_it_stands_in_only_where_warp_transducer_is_missing(monkeypatch):
    monkeypatch.delitem(sys.modules, warprnnt.NAME, raising=False)
    real = type(sys)("warprnnt_pytorch")
    monkeypatch.setitem(sys.modules, warprnnt.NAME, real)
    warprnnt.install()
    assert sys.modules[warprnnt.NAME] is real  # an installed warp-transducer is kept

    monkeypatch.delitem(sys.modules, warprnnt.NAME)
    monkeypatch.setattr(warprnnt.importlib.util, "find_spec", lambda name: None)
    warprnnt.install()
    from warprnnt_pytorch import RNNTLoss  # what ESPnet2's transducer models import

    assert RNNTLoss is warprnnt.RNNTLoss
