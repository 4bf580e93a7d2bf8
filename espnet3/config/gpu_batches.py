"""``dataloader.gpu``: the batch a GPU run uses instead of the CPU-sized one the config was written with.

A config written for CPU workers has batches sized for CPUs (tens of seconds of audio); on a GPU
the same batch leaves the device mostly idle, its step bound by kernel launches. The block names
the keys a GPU run replaces (per GPU worker, like every ``dataloader`` size) and how the
learning rate follows the batch:

.. code-block:: yaml

    dataloader:
      batch_bins: 480000        # CPU workers
      gpu:
        batch_bins: 1920000     # each GPU worker: 4x the batch
        lr_scale: sqrt          # optimizer lr x 4**0.5; scheduler warmup_steps / 4

ESPnet2 leaves the learning rate to the user when the batch grows; its maintainers' advice is to
raise the learning rate and shorten the warm-up, which covers fewer, larger steps
(espnet/espnet#2313). ``lr_scale`` makes that one rule: ``sqrt`` (the default; what Adam-family
optimizers tolerate), ``linear`` (Goyal et al., for SGD) or ``none``. The run's saved train.yaml
holds the applied values and no ``gpu`` block, so a resumed run is not scaled twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from espnet3.errors import ConfigError

LR_RULES = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}
# Batch types sized by padded elements (batch_bins) and those sized by utterances (batch_size).
BINS_TYPES = ("numel", "length", "catpow")


def _size_key(batch_type: str) -> str:
    return "batch_bins" if batch_type in BINS_TYPES else "batch_size"


def parse_gpu_block(block: Any, source: str | Path | None) -> tuple[dict[str, Any], str]:
    """``dataloader.gpu`` as (the dataloader keys it replaces, the ``lr_scale`` rule); checked."""
    from espnet3.data.loader import LoaderSpec

    if not isinstance(block, Mapping):
        raise ConfigError("dataloader.gpu", source, f"expected a mapping of dataloader keys, got {block!r}",
                          "e.g. `gpu: {batch_bins: 1920000, lr_scale: sqrt}`")
    keys = dict(block)
    rule = keys.pop("lr_scale", "sqrt")
    if rule not in LR_RULES:
        raise ConfigError("dataloader.gpu.lr_scale", source, f"got {rule!r}", f"use one of {', '.join(LR_RULES)}")
    known = sorted(set(LoaderSpec.__dataclass_fields__))
    for key in keys:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"dataloader.gpu.{key}", source, "is not a dataloader option",
                              f"did you mean `dataloader.gpu.{close[0]}`?" if close else f"use one of {', '.join(known)}")
    return keys, rule


def apply_gpu_batches(cfg: DictConfig, use_gpu: bool, source: str | Path | None) -> list[str]:
    """Replace ``dataloader`` keys by ``dataloader.gpu``'s on GPU runs; drop the block on every run.

    Returns one line per changed value for the launch log (empty when nothing changed).
    """
    from espnet3.data.loader import LoaderSpec

    loader = cfg.get("dataloader")
    if not isinstance(loader, (DictConfig, Mapping)) or loader.get("gpu") is None:
        return []
    raw = OmegaConf.to_container(loader.gpu, resolve=True) if isinstance(loader.gpu, DictConfig) else loader.gpu
    block, rule = parse_gpu_block(raw, source)
    with open_dict(cfg):
        del cfg.dataloader["gpu"]
    if not use_gpu or not block:
        return []
    defaults = LoaderSpec()
    size_key = _size_key(block.get("batch_type", loader.get("batch_type", defaults.batch_type)))
    before = loader.get(size_key, getattr(defaults, size_key))
    with open_dict(cfg):
        cfg.dataloader.merge_with(block)
    after = cfg.dataloader.get(size_key, before)
    notes = [f"dataloader.{k}: {v} (dataloader.gpu)" for k, v in block.items()]
    if not _is_number(before) or not _is_number(after) or before <= 0 or after == before or rule == "none":
        return notes
    ratio = after / before
    return notes + _scale_learning_rates(cfg, ratio ** LR_RULES[rule], ratio, rule)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scale_learning_rates(cfg: DictConfig, lr_factor: float, ratio: float, rule: str) -> list[str]:
    """``lr`` of every optimizer block times ``lr_factor``; ``warmup_steps`` of every scheduler block / ``ratio``."""
    notes = []
    blocks: list[tuple[str, Any]] = []
    if cfg.get("optimizer") is not None:
        blocks.append(("optimizer", cfg.optimizer))
    for name, spec in (cfg.get("optimizers") or {}).items():
        if isinstance(spec, (DictConfig, Mapping)) and spec.get("optimizer") is not None:
            blocks.append((f"optimizers.{name}.optimizer", spec.optimizer))
    for key, block in blocks:
        if _is_number(block.get("lr")):
            new = float(block.lr) * lr_factor
            notes.append(f"{key}.lr: {block.lr} -> {new:.4g} (x{lr_factor:.3g}, lr_scale {rule}, batch x{ratio:.3g})")
            block.lr = new
    schedulers = [("scheduler", cfg.get("scheduler"))] + [
        (f"schedulers.{name}.scheduler", (spec or {}).get("scheduler")) for name, spec in (cfg.get("schedulers") or {}).items()
    ]
    for key, block in schedulers:
        if isinstance(block, (DictConfig, Mapping)) and _is_number(block.get("warmup_steps")):
            new = max(1, round(block.warmup_steps / ratio))
            notes.append(f"{key}.warmup_steps: {block.warmup_steps} -> {new} (the same audio per warm-up)")
            block.warmup_steps = new
    return notes
