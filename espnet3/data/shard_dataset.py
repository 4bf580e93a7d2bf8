"""A shard directory as ESPnet2's own ``ESPnetDataset``: the array streams come from the shards,
the list files (``text``...) through ESPnet2's loaders, and preprocessing, the task prefix and the
dtype casts are ESPnet2's ``__getitem__`` unchanged (only ``_build_loader`` differs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from espnet3.data.shard_format import ShardColumn, ShardManifest, ShardReader
from espnet3.utils.espnet2_imports import import_espnet2

ESPnetDataset = import_espnet2("espnet2.train.dataset").ESPnetDataset
# The loader type of a stream held in shards, in the triples handed to ESPnetDataset.
SHARD_TYPE = "espnet3_shard"


class ShardedESPnetDataset(ESPnetDataset):
    def __init__(self, manifest: ShardManifest, list_triples: Sequence[tuple[str, str, str]],
                 preprocess: Callable | None, buffer_items: int = 2000):
        self.reader = ShardReader(manifest, buffer_items)
        self._cache: dict = {}  # the utterance last read, shared by its streams
        triples = [(name, name, SHARD_TYPE) for name in manifest.names] + list(list_triples)
        super().__init__(triples, preprocess=preprocess)

    def _build_loader(self, path, loader_type, keys_to_load=None):
        if loader_type == SHARD_TYPE:
            return ShardColumn(self.reader, path, self._cache)
        return super()._build_loader(path, loader_type, keys_to_load)
