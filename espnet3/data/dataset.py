"""One split as a map-style dataset addressed by utterance id, as ESPnet2's batch samplers need.

Triples (and the Kaldi shorthand) load through ESPnet2's own ``ESPnetDataset``, with every loader
type it has; a shard directory through the same class, its array streams read from the shards. A ``_target_`` dataset is the user's class: items are ``(utt_id, dict)`` or a dict of
arrays, addressed by their index as a string, preprocessed and typed as ESPnetDataset would.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from espnet3.data.sources import SplitSource
from espnet3.utils.espnet2_imports import import_espnet2
from espnet3.utils.instantiate import instantiate

Preprocess = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]


class TargetDataset(Dataset):
    """A user's map-style dataset under ESPnet2's item contract: ``dataset[key] -> (utt_id, arrays)``."""

    def __init__(self, dataset: Any, preprocess: Preprocess | None, where: str):
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(
                f"`{where}` built a {type(dataset).__name__}, which is not a map-style dataset "
                "(it needs __getitem__ and __len__)"
            )
        self.dataset = dataset
        self.preprocess = preprocess
        self.where = where

    def keys(self) -> list[str]:
        return [str(i) for i in range(len(self.dataset))]

    def __len__(self) -> int:
        return len(self.dataset)

    def raw(self, key: str | int) -> tuple[str, dict[str, Any]]:
        """Item ``key`` as the user's dataset returns it (text as strings), with its utterance id."""
        item = self.dataset[int(key)]
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Mapping):
            return str(item[0]), dict(item[1])
        if isinstance(item, Mapping):
            return str(key), dict(item)
        raise TypeError(
            f"`{self.where}` item {key} is a {type(item).__name__}; expected (utt_id, dict of arrays) "
            "or a dict of arrays"
        )

    def __getitem__(self, key: str | int) -> tuple[str, dict[str, np.ndarray]]:
        utt_id, data = self.raw(key)
        data = {name: as_array(value) for name, value in data.items()}
        if self.preprocess is not None:
            data = self.preprocess(utt_id, data)
        return utt_id, {name: _typed(name, value, self.where) for name, value in data.items()}


def as_array(value: Any) -> Any:
    if hasattr(value, "numpy") and callable(value.numpy):
        return value.detach().cpu().numpy() if hasattr(value, "detach") else value.numpy()
    if isinstance(value, numbers.Number):
        return np.array([value])
    if isinstance(value, list):
        return np.asarray(value)
    return value


def _typed(name: str, value: Any, where: str) -> np.ndarray:
    """float32 / int64, as ESPnetDataset casts, so CommonCollateFn pads the same way."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"`{where}`: item value {name!r} is a {type(value).__name__}; expected a numpy array")
    if value.dtype.kind == "f":
        return value.astype(np.float32)
    if value.dtype.kind in "iub":
        return value.astype(np.int64)
    raise TypeError(f"`{where}`: item value {name!r} has dtype {value.dtype}; expected floats or integers")


def build_dataset(source: SplitSource, preprocess: Preprocess | None) -> Dataset:
    """The dataset of one split; ``dataset[utt_id] -> (utt_id, arrays)``."""
    if source.target is not None:
        return TargetDataset(instantiate(source.target, _convert_="all"), preprocess, source.key)
    from espnet3.data import remote

    source = source.resolved()
    triples = source.triples
    remote.ensure_lists(t.path for t in triples)  # a node the launcher never wrote to
    if source.shards is not None:
        from espnet3.data.shard_dataset import ShardedESPnetDataset
        from espnet3.data.shard_format import ShardManifest

        manifest = ShardManifest.load(source.shards, source.key)
        return ShardedESPnetDataset(manifest, [t.as_espnet2() for t in triples], preprocess)
    espnet_dataset = import_espnet2("espnet2.train.dataset").ESPnetDataset
    dataset = espnet_dataset([t.as_espnet2() for t in triples], preprocess=preprocess)
    return remote.with_fetching(dataset, [t.path for t in triples])


def dataset_keys(dataset: Dataset) -> list[str]:
    """Every utterance id of a dataset from :func:`build_dataset`, in file (or index) order."""
    if isinstance(dataset, TargetDataset):
        return dataset.keys()
    return list(iter(dataset))  # ESPnetDataset iterates the keys of its first stream
