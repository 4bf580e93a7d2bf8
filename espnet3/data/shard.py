"""``python -m espnet3.data.shard SRC OUT``: an ESPnet2 dump directory (or Kaldi directory) as tar shards.

SRC and OUT are local paths or URIs (``s3://...``). Every utterance is loaded once through ESPnet2's
own loaders (so a ``wav.scp`` of files, pipes or ark offsets all work) and its arrays are written to
``OUT/shard-NNNNNN.tar`` (:mod:`espnet3.data.shard_format`); the list files (``text``, ``utt2spk``,
``spk2utt``, ``category2utt``...) are copied as they are, and ``shards.json`` is written last.
With ``--num-workers N`` > 1 the shards are written by N Ray tasks (``--address`` /
``RAY_ADDRESS`` joins a cluster; otherwise a local one is started and stopped).

Then give OUT as the split (``data.train: s3://bucket/shards/train``): see README, "Runs in object storage".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from espnet3 import storage
from espnet3.data.dataset import as_array
from espnet3.errors import DataError
from espnet3.data.shard_format import MANIFEST, SHARD_NAME, Shard, ShardManifest, ShardStream, write_shard
from espnet3.data.sources import SplitSource

# Loader types whose values are the list file's own lines: copied, not sharded.
LIST_TYPES = ("text", "text_int", "csv_int", "text_float", "csv_float", "random_text", "score", "duration")
UTTERANCES_PER_SHARD = 1000


def _source(src: str) -> SplitSource:
    from espnet3.data import remote

    local = Path(storage.localize(src))
    if storage.is_uri(src):
        problem = storage.check_readable(src)
        if problem is not None:
            raise DataError(f"SRC {src}: {problem}")
        remote.fetch_directory(local, refresh=True)
    source = SplitSource.parse("SRC", str(local)).resolved()
    if source.shards is not None:
        raise DataError(f"SRC {src} is already a shard directory ({MANIFEST}); give the dump directory it came from")
    return source


def _value(value) -> np.ndarray:
    """A loader's value as ESPnetDataset keeps it before preprocessing."""
    value = as_array(value)
    if not isinstance(value, np.ndarray):
        raise DataError(f"a shard holds arrays; the loader returned a {type(value).__name__}")
    return value


def write_items(dataset, src: str, out: str, index: int, keys: Sequence[str], names: Sequence[str]) -> Shard:
    """Load ``keys`` from ``dataset`` (SRC's) and write them as shard ``index`` of OUT."""
    from espnet3.data import remote

    fetched = [p for key in keys for p in getattr(dataset, "files", {}).get(key, [])]  # audio in a bucket
    missing = remote.fetch_items(fetched)
    if missing:
        raise DataError(f"{src}: {', '.join(missing[:3])} does not exist; upload it or remove its utterance")
    items, shapes = [], {name: [] for name in names}
    for key in keys:
        try:
            arrays = {name: _value(dataset.loader_dict[name][key]) for name in names}
        except Exception as err:  # noqa: BLE001 - any loader failure is the data's
            raise DataError(f"{src}: utterance {key!r} cannot be loaded ({type(err).__name__}: {err}); "
                            "fix its line or remove the utterance") from None
        items.append((key, arrays))
        for name, value in arrays.items():
            shapes[name].append(tuple(value.shape) or (1,))
    path = Path(storage.localize(storage.join(out, SHARD_NAME.format(index))))
    write_shard(path, items)
    for copy in fetched:  # this shard's audio: not kept twice on the converting node
        copy.unlink(missing_ok=True)
    if storage.uri_of(path) is not None:
        path.unlink()  # uploaded: a corpus is not kept twice on the converting node
    return Shard(path.name, tuple(keys), {n: tuple(v) for n, v in shapes.items()})


def convert_shard(storage_env: dict[str, str], source: SplitSource, src: str, out: str, index: int,
                  keys: Sequence[str], names: Sequence[str]) -> Shard:
    """:func:`write_items` in a Ray task, on a node that fetches only the list files it lacks."""
    from espnet3.data.dataset import build_dataset
    from espnet3.orchestration.ray_process import ray_process

    with ray_process(storage_env):
        return write_items(build_dataset(source, None), src, out, index, keys, names)


def convert(src: str, out: str, *, utterances_per_shard: int = UTTERANCES_PER_SHARD, num_workers: int = 1,
            address: str | None = None) -> ShardManifest:
    """Convert SRC into shards in OUT; returns the manifest written (last) to ``OUT/shards.json``."""
    from espnet3.data.dataset import build_dataset, dataset_keys

    src, out = (value if storage.is_uri(value) else str(Path(value).resolve()) for value in (src, out))
    if utterances_per_shard < 1 or num_workers < 1:
        raise DataError("--utterances-per-shard and --num-workers must be >= 1")
    if storage.is_uri(out):
        problem = storage.check_reachable(out)
        if problem is not None:
            raise DataError(f"OUT {out}: {problem}")
    source = _source(src)
    arrays = [t for t in source.triples if t.type not in LIST_TYPES]
    lists = [t for t in source.triples if t.type in LIST_TYPES]
    if not arrays:
        raise DataError(f"SRC {src} has no audio or feature stream to shard (only {', '.join(t.name for t in lists)})")
    dataset = build_dataset(source, None)
    keys = dataset_keys(dataset)
    chunks = [keys[i : i + utterances_per_shard] for i in range(0, len(keys), utterances_per_shard)]
    names = [t.name for t in arrays]
    started = time.monotonic()
    if num_workers == 1 or len(chunks) == 1:
        shards = [write_items(dataset, src, out, i, chunk, names) for i, chunk in enumerate(chunks)]
    else:
        shards = _convert_in_ray(source, src, out, chunks, names, num_workers, address)
    directory = source.directory
    sharded_files = {t.path.name for t in arrays}
    for name in sorted(storage.listdir(storage.home(directory))):
        location = storage.join(storage.home(directory), name)
        if name not in sharded_files and name != MANIFEST and storage.is_file(location):
            storage.atomic_write(storage.localize(storage.join(out, name)), storage.read_bytes(location))
    manifest = ShardManifest(
        out,
        tuple(ShardStream(t.name, t.type) for t in arrays),
        tuple(shards),
        tuple((t.path.name, t.name, t.type) for t in lists),
    )
    storage.atomic_write(storage.localize(storage.join(out, MANIFEST)), json.dumps(manifest.to_json()) + "\n")
    print(f"[espnet3] shard: {len(keys)} utterances of {src} -> {len(shards)} shards in {out} "
          f"({time.monotonic() - started:.1f}s, {num_workers} worker{'s' if num_workers > 1 else ''})", flush=True)
    return manifest


def _convert_in_ray(source: SplitSource, src: str, out: str, chunks: list[list[str]], names: list[str], num_workers: int,
                    address: str | None) -> list[Shard]:
    import ray

    from espnet3.orchestration.cluster import start_local_cluster

    address = address or os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address, logging_level=logging.WARNING)
    elif started:
        start_local_cluster(num_workers, logging_level=logging.WARNING)
    try:
        task = ray.remote(num_cpus=1)(convert_shard)
        env = storage.worker_env()
        return ray.get([task.remote(env, source, src, out, i, chunk, names) for i, chunk in enumerate(chunks)])
    finally:
        if started:
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m espnet3.data.shard", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="an ESPnet2 dump directory or Kaldi directory (wav.scp, text...), local or a URI")
    parser.add_argument("out", help="the shard directory to write, local or a URI")
    parser.add_argument("--utterances-per-shard", type=int, default=UTTERANCES_PER_SHARD)
    parser.add_argument("--num-workers", type=int, default=1, help="Ray tasks writing shards in parallel")
    parser.add_argument("--address", default=None, help="a Ray cluster to run them on (default: RAY_ADDRESS or local)")
    args = parser.parse_args(argv)
    try:
        convert(args.src, args.out, utterances_per_shard=args.utterances_per_shard, num_workers=args.num_workers,
                address=args.address)
    except DataError as err:
        print(f"[espnet3] error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
