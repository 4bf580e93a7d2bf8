"""Per-utterance shapes of every data stream, computed once per split and cached as ESPnet2 shape files.

ESPnet2's batch samplers read ``<name>_shape`` files (``utt_id 16000`` or ``utt_id 93,80``); its
recipes get them from the collect_stats stage, which loads every item through the (non-training)
preprocessor. espnet3 does the same load here, with the preprocessor each split is trained or
validated with, before any training worker starts, so that:

* batching sees the lengths the model will see (token counts after tokenization, not characters);
* an item that cannot be loaded or preprocessed is reported with its utterance id, on the driver;
* large splits are measured in parallel, as Ray tasks, and every later run reuses the files.

The files live in ``<stats_dir>/<split>/`` beside a ``shapes.json`` manifest that records what they
were computed from (file sizes and times, the preprocessing options and token lists, whether the
training-time preprocessor was used); a change to any of those recomputes them. Every file is written atomically, the manifest last.

A shard directory's shape files are its ``shards.json`` lengths (its array streams, as converted):
no shard is opened.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espnet3.data.dataset import build_dataset, dataset_keys
from espnet3.errors import DataError
from espnet3.data.preprocess import PreprocessSpec
from espnet3.data.sources import SplitSource
from espnet3 import storage
from espnet3.storage import atomic_write, atomic_write_json

MANIFEST = "shapes.json"
FORMAT_VERSION = 1
# Below this many utterances per task, starting Ray tasks (each imports ESPnet2: seconds)
# costs more than measuring the split in the launching process.
UTTERANCES_PER_SHARD = 5000


@dataclass(frozen=True)
class SplitShapes:
    """A split's shape files, sort key first, and its utterance ids."""

    names: tuple[str, ...]
    files: tuple[Path, ...]
    num_utterances: int


def _source_stamp(source: SplitSource) -> Any:
    if source.target is not None:
        return {"target": source.target}
    source = source.resolved()
    files = [(t.path, t.name, t.type) for t in source.triples]
    if source.shards is not None:
        from espnet3.data.shard_format import MANIFEST

        files.insert(0, (source.shards / MANIFEST, "shards", "manifest"))
    stamps = []
    for path, name, kind in files:
        uri = storage.uri_of(path)
        if uri is None:
            stat = path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        else:  # the object's, the same on every node (a local copy's time is when it was fetched)
            info = storage.info(uri)
            size, mtime = info.size, info.mtime_ns
        stamps.append([uri or str(path), name, kind, size, mtime])
    return stamps


def fingerprint(source: SplitSource, preprocess: PreprocessSpec, train: bool) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "source": _source_stamp(source),
        "preprocess": preprocess.fingerprint(),
        "train": train,
    }


def measure(source: SplitSource, preprocess: PreprocessSpec, keys: Sequence[str] | None = None, train: bool = False
            ) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Load ``keys`` (default: all) through the split's preprocessor; return (names, name -> key -> shape).

    ``train``: the training-time preprocessor, for splits loaded that way. Its random augmentations
    (noise, reverberation, fixed-length crops) keep every length, so the shapes hold.
    """
    dataset = build_dataset(source, preprocess.preprocess_fn(train=train))
    keys = dataset_keys(dataset) if keys is None else keys
    names: list[str] = []
    shapes: dict[str, dict[str, str]] = {}
    for key in keys:
        try:
            _, data = dataset[key]
        except Exception as err:  # noqa: BLE001 - any loader/preprocessor failure is the data's
            raise DataError(
                f"`{source.key}` ({source.description}): utterance {key!r} cannot be loaded and preprocessed "
                f"({type(err).__name__}: {err}); fix its entries in the data files or remove the utterance"
            ) from None
        if not names:
            names = list(data)
        elif list(data) != names and set(data) != set(names):
            raise DataError(
                f"`{source.key}`: utterance {key!r} has data {sorted(data)} but the first has {sorted(names)}; "
                "every utterance must provide the same data"
            )
        for name, value in data.items():
            shape = tuple(value.shape) or (1,)
            shapes.setdefault(name, {})[key] = ",".join(map(str, shape))
    return names, shapes


def _measure_shard(storage_env: dict[str, str], *args):
    """:func:`measure` in a Ray task, which reaches object storage as the launcher does (the
    preprocessor may read files named relative to the recipe, as on the launcher)."""
    from espnet3.orchestration.ray_process import ray_process

    with ray_process(storage_env):
        return measure(*args)


def _measure_in_ray(source: SplitSource, preprocess: PreprocessSpec, keys: list[str], num_shards: int,
                    cpus_per_shard: float, train: bool) -> tuple[list[str], dict[str, dict[str, str]]]:
    import ray

    chunk = math.ceil(len(keys) / num_shards)
    remote = ray.remote(num_cpus=cpus_per_shard)(_measure_shard)
    refs = [remote.remote(storage.worker_env(), source, preprocess, keys[i : i + chunk], train)
            for i in range(0, len(keys), chunk)]
    names: list[str] = []
    shapes: dict[str, dict[str, str]] = {}
    for shard_names, shard_shapes in ray.get(refs):  # shard order: the files keep the data's order
        names = names or shard_names
        for name, lines in shard_shapes.items():
            shapes.setdefault(name, {}).update(lines)
    return names, shapes


def _sorted_names(names: list[str], source: SplitSource) -> tuple[str, ...]:
    """Data streams in triple order first (the first is ESPnet2's sort key), then what preprocessing added."""
    first = [n for n in source.names if n in names]
    return tuple(first + [n for n in names if n not in first])


def ensure_shapes(
    source: SplitSource,
    preprocess: PreprocessSpec,
    out_dir: Path,
    *,
    train: bool = False,
    parallel: bool = False,
    defer_large: bool = False,
    cpus_per_shard: float = 1.0,
    log: bool = True,
) -> SplitShapes | None:
    """The split's shape files in ``out_dir``, computed unless a manifest says they are current.

    With ``parallel`` (a Ray cluster is connected), splits of more than ``UTTERANCES_PER_SHARD``
    utterances are measured by several Ray tasks; without it, ``defer_large`` leaves such a split
    alone (returns ``None``) for a later parallel call.
    """
    manifest_path = out_dir / MANIFEST
    stamp = fingerprint(source, preprocess, train)
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        files = tuple(out_dir / f"{n}_shape" for n in manifest["names"])
        if manifest.get("fingerprint") == stamp and all(f.is_file() for f in files):
            return SplitShapes(tuple(manifest["names"]), files, manifest["num_utterances"])
    started = time.monotonic()
    resolved = source.resolved()
    if resolved.shards is not None:  # the manifest has the lengths: no shard is opened
        from espnet3.data.shard_format import ShardManifest

        manifest = ShardManifest.load(resolved.shards, source.key)
        return _write_shapes(out_dir, stamp, list(manifest.names), {n: manifest.shape_lines(n) for n in manifest.names},
                             "from shards.json", started, log)
    keys = dataset_keys(build_dataset(source, None)) if parallel or defer_large else None
    if defer_large and not parallel and len(keys) > UTTERANCES_PER_SHARD:
        return None
    num_shards = 1
    if parallel:
        import ray

        cpus = ray.cluster_resources().get("CPU", 1)
        num_shards = max(1, min(int(cpus // cpus_per_shard), math.ceil(len(keys) / UTTERANCES_PER_SHARD)))
    if num_shards > 1:
        names, shapes = _measure_in_ray(source, preprocess, keys, num_shards, cpus_per_shard, train)
    else:
        names, shapes = measure(source, preprocess, keys, train)
    how = f"{num_shards} task{'s' if num_shards > 1 else ''}"
    return _write_shapes(out_dir, stamp, list(_sorted_names(names, source)), shapes, how, started, log)


def _write_shapes(out_dir: Path, stamp: Any, ordered: list[str], shapes: dict[str, dict[str, str]], how: str,
                  started: float, log: bool) -> SplitShapes:
    utt_order = list(shapes[ordered[0]])
    files = []
    for name in ordered:
        lines = shapes[name]
        files.append(atomic_write(out_dir / f"{name}_shape", "".join(f"{u} {lines[u]}\n" for u in utt_order)))
    atomic_write_json(out_dir / MANIFEST, {"fingerprint": stamp, "names": ordered, "num_utterances": len(utt_order)})
    if log:
        print(
            f"[espnet3] shapes [{out_dir.name}]: {len(utt_order)} utterances, {', '.join(ordered)} "
            f"({how}, {time.monotonic() - started:.1f}s) -> {out_dir}",
            flush=True,
        )
    return SplitShapes(tuple(ordered), tuple(files), len(utt_order))
