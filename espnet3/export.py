"""Hand trained models to ESPnet2's tools: ``config.yaml``, ``*.pth`` and checkpoint averages.

ESPnet2's inference classes (``Speech2Text`` and friends) rebuild a model with
``Task.build_model(Namespace(**yaml.safe_load(config.yaml)))`` and load a plain
``state_dict`` into it, so that is exactly what is written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from espnet3.data.preprocess import PreprocessSpec
from espnet3.storage import atomic_save, atomic_write

# The Lightning module keeps the ESPnet model as its attribute `model`.
LIGHTNING_MODEL_PREFIX = "model."
WEIGHTS = ("trained", "ema")
# Where Lightning's weight-averaging callbacks keep the trained weights in a checkpoint.
EMA_TRAINED_KEY = "current_model_state"


def write_espnet2_config(preprocess: PreprocessSpec, exp_dir: str | Path, seed: int) -> Path:
    """Write ``<exp_dir>/config.yaml`` in the form ESPnet2's inference tools read.

    The run's ESPnet2 args: the task's defaults updated with the model and preprocessor
    blocks and the token settings (token lists as lists), exactly what the model and the
    preprocessor were built from. Only for task models: a ``model._target_`` model has no
    ESPnet2 task to rebuild it.
    """
    if preprocess.task is None:
        raise ValueError(
            "write_espnet2_config needs `task` in the train.yaml: a `model._target_` model "
            "has no ESPnet2 task that could rebuild it from config.yaml."
        )
    args = {**preprocess.args, "seed": seed}
    if args.get("token_type") != "bpe" and "bpemodel" in args:
        args["bpemodel"] = None
    path = Path(exp_dir) / "config.yaml"
    atomic_write(path, yaml.safe_dump(_yaml_safe(args), sort_keys=False, allow_unicode=True))
    return path


def _yaml_safe(value: Any) -> Any:
    # ESPnet2's defaults hold tuples and Paths that yaml.safe_dump refuses.
    if isinstance(value, dict):
        return {str(k): _yaml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def save_model_pth(model: torch.nn.Module, path: str | Path) -> Path:
    """Save the ESPnet model's ``state_dict`` (not the Lightning module's) to ``path``."""
    return atomic_save(path, lambda tmp: torch.save(model.state_dict(), tmp))


def load_model_state(path: str | Path, weights: str = "trained") -> dict[str, torch.Tensor]:
    """The ESPnet model's ``state_dict`` from a Lightning ``.ckpt`` or a plain ``.pth``.

    Args:
        weights: which weights of a checkpoint written with ``ema:``: ``trained`` (the optimizer's)
            or ``ema`` (the moving average). Lightning's EMA callback stores the average as the
            checkpoint's ``state_dict`` and the trained weights as ``current_model_state``.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    loaded = torch.load(Path(path), map_location="cpu", weights_only=False)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a state_dict or a Lightning checkpoint, got {type(loaded).__name__}")
    if "state_dict" not in loaded:
        if weights == "ema":
            raise ValueError(f"{path} is a plain state_dict: it holds one set of weights, not an EMA")
        return loaded
    has_ema = EMA_TRAINED_KEY in loaded
    if weights == "ema" and not has_ema:
        raise ValueError(f"{path} holds no EMA weights: the run was trained without `ema:`")
    state = loaded[EMA_TRAINED_KEY] if has_ema and weights == "trained" else loaded["state_dict"]
    model_state = {
        k[len(LIGHTNING_MODEL_PREFIX):]: v
        for k, v in state.items()
        if k.startswith(LIGHTNING_MODEL_PREFIX)
    }
    if not model_state:
        raise ValueError(
            f"{path}: no `{LIGHTNING_MODEL_PREFIX}*` weights in the checkpoint's state_dict; "
            "was it saved by espnet3's Lightning module?"
        )
    return model_state


def average_checkpoints(paths: Sequence[str | Path], out: str | Path, weights: str = "trained") -> Path:
    """Average the model weights of several checkpoints into one ``.pth`` at ``out``.

    ``weights`` picks the trained or the EMA weights (:func:`load_model_state`).

    Floating-point tensors are averaged (in float64, then cast back). Integer tensors such
    as BatchNorm's ``num_batches_tracked`` are counters, not weights: the last checkpoint's
    value is kept.
    """
    if not paths:
        raise ValueError("average_checkpoints needs at least one checkpoint path")
    states = [load_model_state(p, weights) for p in paths]
    keys = list(states[-1])
    for path, state in zip(paths, states):
        if set(state) != set(keys):
            diff = sorted(set(state) ^ set(keys))[:5]
            raise ValueError(
                f"{path} holds different parameters from {paths[-1]} (e.g. {diff}); "
                "only checkpoints of the same model can be averaged."
            )
    averaged: dict[str, torch.Tensor] = {}
    for key in keys:
        last = states[-1][key]
        if not torch.is_floating_point(last):
            averaged[key] = last.clone()
            continue
        total = sum(state[key].to(torch.float64) for state in states)
        averaged[key] = (total / len(states)).to(last.dtype)
    return atomic_save(out, lambda tmp: torch.save(averaged, tmp))
