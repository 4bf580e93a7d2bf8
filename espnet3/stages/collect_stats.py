"""The collect_stats stage: feature statistics for ``normalize: global_mvn``, sharded over Ray tasks.

Writes, per split, what ESPnet2's ``collect_stats`` writes: ``<key>_stats.npz`` (``count``, ``sum``,
``sum_square`` over valid frames) for every output of ``model.collect_feats``, ``<key>_shape`` files
(``utt_id T,D``) for the features, ``batch_keys`` and ``stats_keys`` (the batch's own shape files
are the data plan's, :mod:`espnet3.data.shapes`, in the same directory). Sums are accumulated in
float64 and merged across shards in a fixed order, so any number of shards gives the
single-process numbers up to float64 rounding.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from espnet3.data.plan import DataPlan
from espnet3.data.spec import plain_mapping
from espnet3.storage import atomic_save, atomic_write

ModelFactory = Callable[[dict[str, Any]], torch.nn.Module]


@dataclass
class FeatStats:
    """Running per-key sums, plus the shape lines, of one shard (or of several, merged)."""

    count: dict[str, int] = field(default_factory=dict)
    sum: dict[str, np.ndarray] = field(default_factory=dict)
    sum_square: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, dict[str, str]] = field(default_factory=dict)
    batch_keys: list[str] = field(default_factory=list)

    def add(self, key: str, seq: np.ndarray) -> None:
        # float64 so that merging shards in another order changes only the last bits.
        seq = seq.astype(np.float64) if np.issubdtype(seq.dtype, np.floating) else seq.astype(np.int64)
        if key not in self.count:
            self.count[key], self.sum[key], self.sum_square[key] = 0, 0, 0
        self.count[key] += len(seq)
        self.sum[key] = self.sum[key] + seq.sum(0)
        self.sum_square[key] = self.sum_square[key] + (seq**2).sum(0)

    def merge(self, other: FeatStats) -> None:
        for key in other.count:
            if key not in self.count:
                self.count[key], self.sum[key], self.sum_square[key] = 0, 0, 0
            self.count[key] += other.count[key]
            self.sum[key] = self.sum[key] + other.sum[key]
            self.sum_square[key] = self.sum_square[key] + other.sum_square[key]
        for name, lines in other.shapes.items():
            self.shapes.setdefault(name, {}).update(lines)
        self.batch_keys = self.batch_keys or other.batch_keys


# ESPnet2's normalisation layers that read collect_stats' output (feats, pitch, energy: TTS and SVS).
NORMALIZE_LAYERS = ("normalize", "pitch_normalize", "energy_normalize")


def uses_collected_stats(model_cfg: Any) -> bool:
    """Whether a task model's config has a ``global_mvn`` layer, whose statistics this stage writes."""
    return any(str((model_cfg or {}).get(key)) == "global_mvn" for key in NORMALIZE_LAYERS)


def model_config_for_stats(model_cfg: Any) -> dict[str, Any]:
    """A copy of the model's config (ESPnet2 args or a ``model:`` block) with global normalisation off.

    The ``<layer>_conf.stats_file`` that each global_mvn layer would load is what this stage writes,
    and ``collect_feats`` never normalises anyway. A copy, because upstream ESPnet3 edits the config
    in place and the following train stage then builds a model without normalisation.
    """
    model_cfg = copy.deepcopy(plain_mapping(model_cfg, "model"))
    for key in NORMALIZE_LAYERS:
        if model_cfg.get(key) is not None:
            model_cfg[key] = None
            model_cfg.pop(f"{key}_conf", None)
    return model_cfg


def collect_shard(
    model_factory: ModelFactory,
    model_cfg: dict[str, Any],
    plan: DataPlan,
    split: str,
    batches: Sequence[Sequence[str]],
) -> FeatStats:
    """Statistics of ``batches`` (utterance ids) of ``split``, with a model built here from ``model_factory(model_cfg)``."""
    model = model_factory(copy.deepcopy(model_cfg))
    if not callable(getattr(model, "collect_feats", None)):
        raise TypeError(
            f"{type(model).__module__}.{type(model).__qualname__} has no collect_feats(**batch) method, "
            "so the collect_stats stage cannot compute feature statistics for it; drop collect_stats "
            "from the stages or use a model with a frontend (e.g. an ESPnet2 ASR model)"
        )
    model.eval()
    stats = FeatStats()
    # No augmentation: statistics describe the features, as in ESPnet2's collect_stats.
    dataset = plan.dataset(split, train=False)
    collate = plan.preprocess.collate_fn(train=False)
    with torch.no_grad():
        for batch_keys in batches:
            keys, batch = collate([dataset[key] for key in batch_keys])
            stats.batch_keys = [k for k in batch if not k.endswith("_lengths")]
            feats = {k: v.detach().cpu() for k, v in model.collect_feats(**batch).items()}
            _record_shapes(stats, keys, feats)
            for key, value in feats.items():
                for i, seq in enumerate(value.numpy()):
                    if f"{key}_lengths" in feats:
                        seq = seq[: int(feats[f"{key}_lengths"][i])]
                    else:
                        seq = seq[None]  # a per-utterance vector, e.g. feats_lengths, as ESPnet2 does
                    stats.add(key, seq)
    return stats


def _record_shapes(stats: FeatStats, keys: Sequence[str], tensors: dict[str, torch.Tensor]) -> None:
    for name, value in tensors.items():
        if name.endswith("_lengths"):
            continue
        lines = stats.shapes.setdefault(f"{name}_shape", {})
        for i, utt in enumerate(keys):
            seq = value[i]
            if f"{name}_lengths" in tensors:
                seq = seq[: int(tensors[f"{name}_lengths"][i])]
            lines[utt] = ",".join(map(str, seq.shape))


def write_stats(stats: FeatStats, out_dir: Path, utt_order: Sequence[str]) -> None:
    """ESPnet2's collect_stats output files for one split (each written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in stats.count:
        atomic_save(out_dir / f"{key}_stats.npz", lambda tmp, key=key: _savez(tmp, stats, key))
    for name, lines in stats.shapes.items():
        atomic_write(out_dir / name, "".join(f"{u} {lines[u]}\n" for u in utt_order))
    atomic_write(out_dir / "batch_keys", "\n".join(stats.batch_keys) + "\n")
    atomic_write(out_dir / "stats_keys", "\n".join(stats.count) + "\n")


def _savez(path: Path, stats: FeatStats, key: str) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to the temp name
        np.savez(f, count=stats.count[key], sum=stats.sum[key], sum_square=stats.sum_square[key])


def _shards(batches: list[tuple[str, ...]], num_shards: int, contiguous: bool = False) -> list[list[tuple[str, ...]]]:
    """Deal whole batches round-robin (neighbours in length, so shards cost about the same), or in
    contiguous runs for sharded data (its batches come in shard order: each task streams its own shards).

    Whole batches, because a frontend's last frames depend on the padding around an utterance:
    keeping every batch intact gives each utterance the same features it gets in one process.
    """
    if contiguous:
        size = -(-len(batches) // num_shards)
        return [batches[k * size : (k + 1) * size] for k in range(num_shards)]
    return [batches[k::num_shards] for k in range(num_shards)]


def _collect_shard_logged(storage_env: dict[str, str], log_file: Path, model_factory: ModelFactory, model_cfg: dict[str, Any], plan: DataPlan,
                          split: str, batches: list[tuple[str, ...]]) -> FeatStats:
    """:func:`collect_shard` in a Ray task, its prints (ESPnet2's model-building notices) kept in
    ``log_file`` instead of being forwarded to the driver's console; the model and preprocessor may
    read files named relative to the recipe, as on the launcher."""
    from espnet3.orchestration.ray_process import ray_process

    with ray_process(storage_env, log_file):
        plan.pull_files()  # the plan's token lists, on a node without the run's files
        return collect_shard(model_factory, model_cfg, plan, split, batches)


def _run_split(
    model_factory: ModelFactory,
    model_cfg: dict[str, Any],
    plan: DataPlan,
    split: str,
    batches: list[tuple[str, ...]],
    num_shards: int,
    num_cpus_per_shard: float,
) -> FeatStats:
    if num_shards == 1:
        return collect_shard(model_factory, model_cfg, plan, split, batches)
    import ray

    shards = [own for own in _shards(batches, num_shards, plan.source(split).shards is not None) if own]
    remote = ray.remote(num_cpus=num_cpus_per_shard)(_collect_shard_logged)
    logs = Path(plan.stats_dir) / "logs"
    from espnet3 import storage

    refs = [remote.remote(storage.worker_env(), logs / f"collect_{split}_{k}.log", model_factory, model_cfg, plan, split, own)
            for k, own in enumerate(shards)]
    index_of = {ref: k for k, ref in enumerate(refs)}
    results: list[FeatStats | None] = [None] * len(refs)
    total = sum(len(b) for b in batches)
    pending, done_utts, start = list(refs), 0, time.monotonic()
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        k = index_of[ready[0]]
        results[k] = ray.get(ready[0])
        done_utts += sum(len(b) for b in shards[k])
        print(
            f"collect_stats [{split}]: {len(refs) - len(pending)}/{len(refs)} shards, "
            f"{done_utts}/{total} utterances, {time.monotonic() - start:.1f}s",
            flush=True,
        )
    merged = FeatStats()
    for result in results:  # shard order, not completion order: reproducible sums
        merged.merge(result)
    return merged


def collect_stats(
    model_factory: ModelFactory,
    model_cfg: Any,
    plan: DataPlan,
    *,
    num_shards: int | None = None,
    num_cpus_per_shard: float = 1.0,
    splits: Sequence[str] = ("train", "valid"),
) -> Path:
    """Run ``model.collect_feats`` over ``splits`` and write ``<plan.stats_dir>/<split>/``; return the stats dir.

    Args:
        model_factory: Picklable ``model_cfg -> model`` (e.g. ``functools.partial(get_espnet_model,
            task)``); called in every Ray task with a copy of ``model_cfg`` with normalisation off.
        model_cfg: The ``model:`` block; not modified.
        plan: The run's data plan (batches come from its shape files and ``dataloader`` options).
        num_shards: Ray tasks per split; 1 runs in this process without Ray. Default: as many as the
            Ray cluster's CPUs allow at ``num_cpus_per_shard`` each.
        num_cpus_per_shard: CPUs reserved per Ray task.
        splits: Splits to process; ``normalize: global_mvn`` reads the ``train`` statistics.
    """
    model_cfg = model_config_for_stats(model_cfg)
    if num_shards is None:
        import ray

        if not ray.is_initialized():
            ray.init()
        num_shards = max(1, int(ray.cluster_resources().get("CPU", 1) // num_cpus_per_shard))
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    for split in splits:
        batches = plan.batches(split)
        stats = _run_split(
            model_factory, model_cfg, plan, split, batches, min(num_shards, len(batches)), num_cpus_per_shard
        )
        write_stats(stats, plan.stats_dir / split, [k for b in batches for k in sorted(b)])
    return plan.stats_dir
