"""Data sources in object storage: an ESPnet2 dump directory uploaded as it is, read by every node.

A split's files (``data.train: s3://bucket/dump/raw/train``, or triples whose paths are URIs) and
the audio or feature files their lines name (``utt s3://bucket/wav/utt.flac``, ``utt
s3://bucket/feats.ark:123``) stay in the bucket; each node keeps local copies
(:mod:`espnet3.storage`), so ESPnet2's own loaders (soundfile, kaldiio, numpy) read them
unchanged:

* a **list file** (``wav.scp``, ``text``, ``feats.scp``, ...) is fetched once per node, and its
  URI values are rewritten to their local copies (the copy is never uploaded back);
* an **item file** is fetched when an item first needs it (:class:`FetchingDataset`), so a node
  reads only what its batches use, once.

The driver fetches the list files before its data checks; workers, shape tasks, collect_stats
tasks and inference actors fetch them when they build a dataset (:func:`ensure_lists`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from torch.utils.data import Dataset

from espnet3 import storage

# A Kaldi ark offset after a file name (``feats.ark:123``): the file to fetch is the part before it.
_OFFSET = re.compile(r"^(.*\.ark)(:\d+)$")
# Parallel downloads: item files are small, so a fetch is latency-bound.
FETCH_THREADS = 16


def _split_offset(value: str) -> tuple[str, str]:
    match = _OFFSET.match(value)
    return (match.group(1), match.group(2)) if match else (value, "")


def _localized_value(value: str) -> str:
    """A line's value with each URI token replaced by its local copy; a value that is not made of
    URIs only (a transcript) is left as it is."""
    tokens = value.split()
    if not tokens or not all(storage.is_uri(t) for t in tokens):
        return value
    out = []
    for token in tokens:
        uri, offset = _split_offset(token)
        out.append(f"{storage.local_copy(uri)}{offset}")
    return " ".join(out)


def _localized_lines(text: str) -> str:
    lines = []
    for line in text.splitlines():
        key, sep, value = line.strip().partition(" ")
        lines.append(f"{key}{sep}{_localized_value(value.strip())}" if sep else line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def fetch_list(path: str | os.PathLike, refresh: bool = False) -> Path:
    """Make a list file's local copy present, its URI values pointing to local copies.

    ``path`` is the local copy of a URI (:func:`espnet3.storage.local_copy`); a plain local file
    is returned as it is.
    """
    path = Path(path)
    uri = storage.uri_of(path)
    if uri is None or (path.exists() and not refresh):
        return path
    if not storage.is_file(uri):
        raise FileNotFoundError(f"{uri} does not exist")
    text = storage.read_bytes(uri).decode("utf-8", errors="surrogateescape")
    storage.atomic_write(path, _localized_lines(text).encode("utf-8", errors="surrogateescape"), upload=False)
    return path


def fetch_directory(path: str | os.PathLike, refresh: bool = False) -> Path:
    """A Kaldi directory's local copy: every file directly in it (``wav.scp``, ``text``, ``utt2spk``,
    ``category2utt``, ...); what its subdirectories hold (audio) is fetched as items need it, and a
    shard directory's ``.tar`` shards are streamed, never copied."""
    path = Path(path)
    uri = storage.uri_of(path)
    if uri is None:
        return path
    for name in storage.listdir(uri):
        if not name.endswith(".tar") and storage.is_file(storage.join(uri, name)):
            fetch_list(path / name, refresh=refresh)
    return path


def ensure_lists(paths: Iterable[str | os.PathLike]) -> None:
    """Fetch the list files among ``paths`` that are local copies missing on this node, and any
    ``category2utt`` beside them (the category batch types read it)."""
    for path in paths:
        path = Path(path)
        if storage.uri_of(path) is None:
            continue
        fetch_list(path)
        category = path.parent / "category2utt"
        if not category.exists() and storage.is_file(storage.join(storage.uri_of(path.parent), "category2utt")):
            fetch_list(category)


def item_files(list_file: str | os.PathLike) -> dict[str, list[Path]]:
    """utterance id -> the local copies its line names (empty for a list without URI values)."""
    root = storage.cache_root()
    files: dict[str, list[Path]] = {}
    with open(list_file, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            key, _, value = line.strip().partition(" ")
            paths = [Path(_split_offset(t)[0]) for t in value.split()]
            if paths and all(p.is_absolute() and p.is_relative_to(root) for p in paths):
                files[key] = paths
    return files


def fetch_items(paths: Iterable[Path]) -> list[str]:
    """Fetch the item files missing here, in parallel; returns the URIs that do not exist."""
    todo = [p for p in dict.fromkeys(paths) if not p.exists()]

    def one(path: Path) -> str | None:
        uri = storage.uri_of(path)
        if not storage.is_file(uri):
            return uri
        storage.atomic_write(path, storage.read_bytes(uri), upload=False)
        return None

    if len(todo) == 1:
        return [u for u in [one(todo[0])] if u]
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        return [u for u in pool.map(one, todo) if u]


class FetchingDataset(Dataset):
    """An ESPnet2 dataset whose items name files in object storage: each item's files are fetched
    (once per node) before ESPnet2's loaders open them."""

    def __init__(self, dataset: Dataset, files: dict[str, list[Path]]):
        self.dataset = dataset
        self.files = files

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        return iter(self.dataset)

    def __getitem__(self, key):
        paths = self.files.get(key)
        if paths:
            missing = fetch_items(paths)
            if missing:
                raise FileNotFoundError(f"utterance {key!r}: {', '.join(missing)} does not exist in object storage")
        return self.dataset[key]

    def __getattr__(self, name):  # ESPnetDataset's own attributes (loader_dict, has_name, ...)
        if name in ("dataset", "files"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def with_fetching(dataset: Dataset, list_files: Iterable[str | os.PathLike]) -> Dataset:
    """``dataset`` wrapped in :class:`FetchingDataset` when any of its list files names URIs (only
    list files in object storage may: the data checks refuse URI values in a local one)."""
    files: dict[str, list[Path]] = {}
    for list_file in (f for f in list_files if storage.uri_of(f) is not None):
        for utt, paths in item_files(list_file).items():
            files.setdefault(utt, []).extend(paths)
    return FetchingDataset(dataset, files) if files else dataset
