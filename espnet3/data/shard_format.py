"""Sharded corpora: WebDataset-style tar shards with a manifest of lengths, read as a stream.

For a corpus in object storage, one GET per audio file is latency-bound (`benchmarks`'
``storage_data``); a shard is one sequential read of many utterances. A shard directory (local or
a URI) holds:

* ``shard-000000.tar``, ...: per utterance, in order, one member per array stream,
  ``<utt_id>.<name>.npy`` (the value ESPnet2's loader returned, dtype kept), as WebDataset writes
  samples (members of one sample are adjacent, named ``<key>.<field>``);
* the split's list files of text type and its other Kaldi files (``text``, ``utt2spk``,
  ``category2utt``...) copied as they are, so tokenizers, metrics and checks read them unchanged;
* ``shards.json``, written last (a directory without it is an unfinished conversion): the streams,
  and per shard its utterance ids and every array's shape, from which batches are made without
  opening a shard.

:class:`ShardReader` serves ``reader.item(utt_id)`` by streaming the utterance's shard forward
(``tarfile`` in stream mode over a ``pyarrow.fs`` input stream) and keeping the members it passed
in a bounded buffer; a request behind the stream reopens the shard. Correctness never depends on
that buffer, only speed does: :mod:`espnet3.data.shard_sampler` orders each DataLoader worker's
requests so that it reads its shards once, front to back.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from espnet3 import storage
from espnet3.errors import DataError

MANIFEST = "shards.json"
FORMAT = "espnet3-shards"
VERSION = 1
SHARD_NAME = "shard-{:06d}.tar"
STREAM_BUFFER = 8 << 20


@dataclass(frozen=True)
class ShardStream:
    """An array stream stored in the shards: its data key and the ESPnet2 loader type it came from."""

    name: str
    type: str


@dataclass(frozen=True)
class Shard:
    path: str  # relative to the shard directory
    keys: tuple[str, ...]
    shapes: Mapping[str, tuple[tuple[int, ...], ...]]  # stream name -> one shape per key


@dataclass(frozen=True)
class ShardManifest:
    """``shards.json`` of a shard directory (``root``: its location, a local path or a URI)."""

    root: str
    streams: tuple[ShardStream, ...]
    shards: tuple[Shard, ...]
    lists: tuple[tuple[str, str, str], ...] = ()  # (file in the directory, name, ESPnet2 loader type)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.streams)

    @property
    def keys(self) -> list[str]:
        return [k for shard in self.shards for k in shard.keys]

    def shape_lines(self, name: str) -> dict[str, str]:
        """``utt_id -> "T[,D]"`` for ``name``, in ESPnet2's shape-file form."""
        return {k: ",".join(map(str, shape)) for shard in self.shards
                for k, shape in zip(shard.keys, shard.shapes[name])}

    def location(self, shard: Shard) -> str:
        return storage.join(self.root, shard.path)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "streams": [{"name": s.name, "type": s.type} for s in self.streams],
            "lists": [list(x) for x in self.lists],
            "num_utterances": sum(len(s.keys) for s in self.shards),
            "shards": [{"path": s.path, "keys": list(s.keys),
                        "shapes": {n: [list(x) for x in v] for n, v in s.shapes.items()}} for s in self.shards],
        }

    @classmethod
    def load(cls, root: str | os.PathLike, where: str = "data") -> ShardManifest:
        location = storage.join(storage.home(root), MANIFEST)
        try:
            raw = json.loads(storage.read_text(location))
            if raw.get("format") != FORMAT or raw.get("version") != VERSION:
                raise ValueError(f"format {raw.get('format')!r} version {raw.get('version')!r}")
            streams = tuple(ShardStream(s["name"], s["type"]) for s in raw["streams"])
            shards = tuple(Shard(s["path"], tuple(s["keys"]),
                                 {n: tuple(tuple(x) for x in v) for n, v in s["shapes"].items()})
                           for s in raw["shards"])
            lists = tuple(tuple(x) for x in raw.get("lists", []))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(
                f"`{where}`: {location} is not a shard manifest of this espnet3 ({type(err).__name__}: {err}); "
                "convert the data again with `python -m espnet3.data.shard`"
            ) from None
        return cls(storage.home(root), streams, shards, lists)


def is_shard_dir(directory: str | os.PathLike) -> bool:
    """Whether a data directory (local, or the local copy of a URI) is a shard directory."""
    return storage.is_file(storage.join(storage.home(directory), MANIFEST))


# -- writing ------------------------------------------------------------------------------------


def member_name(key: str, name: str) -> str:
    return f"{key}.{name}.npy"


def write_shard(path: str | os.PathLike, items: Sequence[tuple[str, Mapping[str, np.ndarray]]]) -> None:
    """Write one shard atomically (a local temp file renamed, then one upload for a URI's copy)."""

    def save(tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for key, arrays in items:
                for name, value in arrays.items():
                    buffer = io.BytesIO()
                    np.save(buffer, value, allow_pickle=False)
                    info = tarfile.TarInfo(member_name(key, name))
                    info.size = buffer.tell()
                    buffer.seek(0)
                    tar.addfile(info, buffer)

    storage.atomic_save(path, save)


# -- reading ------------------------------------------------------------------------------------


class ShardReader:
    """``item(utt_id) -> {name: array}`` from a shard directory, streaming one shard at a time.

    Args:
        manifest: the directory's manifest.
        buffer_items: how many passed-over utterances are kept for a later request (oldest dropped).
    """

    def __init__(self, manifest: ShardManifest, buffer_items: int = 2000):
        self.manifest = manifest
        self.buffer_items = buffer_items
        self.where: dict[str, tuple[int, int]] = {
            key: (s, i) for s, shard in enumerate(manifest.shards) for i, key in enumerate(shard.keys)
        }
        self.opened = 0  # shard opens, for tests and benchmarks
        self._reset()

    def _reset(self) -> None:
        self._buffer: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._shard: int | None = None
        self._position = 0  # utterances of the open shard read so far
        self._stream: Any = None
        self._members: Iterator[tarfile.TarInfo] | None = None
        self._tar: tarfile.TarFile | None = None

    def __getstate__(self) -> dict[str, Any]:  # a DataLoader worker opens its own streams
        return {"manifest": self.manifest, "buffer_items": self.buffer_items, "where": self.where, "opened": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def close(self) -> None:
        for closable in (self._tar, self._stream):
            if closable is not None:
                closable.close()
        self._tar = self._stream = self._members = None
        self._shard = None

    def _open(self, index: int) -> None:
        self.close()
        fs, path = storage.filesystem(self.manifest.location(self.manifest.shards[index]))
        # Buffered: tarfile reads 512-byte blocks, and an unbuffered S3 stream makes a request per read.
        self._stream = fs.open_input_stream(path, buffer_size=STREAM_BUFFER)
        self._tar = tarfile.open(fileobj=self._stream, mode="r|")
        self._members = iter(self._tar)
        self._shard, self._position = index, 0
        self.opened += 1

    def _next_item(self) -> tuple[str, dict[str, np.ndarray]]:
        shard = self.manifest.shards[self._shard]
        key = shard.keys[self._position]
        arrays = {}
        for name in self.manifest.names:
            member = next(self._members, None)
            if member is None or member.name != member_name(key, name):
                raise DataError(
                    f"{self.manifest.location(shard)}: expected member {member_name(key, name)}, found "
                    f"{member.name if member else 'the end of the archive'}; the shard does not match "
                    f"{MANIFEST}: convert the data again"
                )
            arrays[name] = np.load(io.BytesIO(self._tar.extractfile(member).read()), allow_pickle=False)
        self._position += 1
        return key, arrays

    def item(self, key: str) -> dict[str, np.ndarray]:
        if key in self._buffer:
            return self._buffer.pop(key)
        if key not in self.where:
            raise KeyError(key)
        index, position = self.where[key]
        if self._shard != index or position < self._position:
            self._open(index)
        while True:
            found, arrays = self._next_item()
            if found == key:
                if self._position == len(self.manifest.shards[index].keys):
                    self.close()
                return arrays
            self._buffer[found] = arrays
            if len(self._buffer) > self.buffer_items:
                self._buffer.popitem(last=False)


class ShardColumn(Mapping):
    """One array stream of a shard directory as the ``utt_id -> value`` mapping ESPnet2's
    ``ESPnetDataset`` keeps per stream; both streams of an utterance come from one read."""

    def __init__(self, reader: ShardReader, name: str, cache: dict[str, Any]):
        self.reader, self.name, self.cache = reader, name, cache

    def __getitem__(self, key: str) -> np.ndarray:
        if self.cache.get("key") != key:
            self.cache.update(key=key, arrays=self.reader.item(key))
        return self.cache["arrays"][self.name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.reader.manifest.keys)

    def __len__(self) -> int:
        return len(self.reader.where)
