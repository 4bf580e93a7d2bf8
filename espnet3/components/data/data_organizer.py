"""One split of an egs3 recipe's ``dataset:`` block as a map-style dataset (:class:`RecipeSplit`).

Upstream's ``DataOrganizer`` builds every split and applies the preprocessor itself. This
project's front end reads the ``dataset:`` block instead: each split's entries become a
``{_target_: ...RecipeSplit, entries: [...], recipe_dir: ...}`` dataset, whose items its own data
layer preprocesses, batches and shards like any ``_target_`` dataset.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from espnet3.components.data.dataset_module import instantiate_dataset_reference
from espnet3.utils.instantiate import instantiate

# The keys of a dataset entry upstream accepts (``split`` is kept there as a label only).
ENTRY_KEYS = frozenset({"name", "data_src", "data_src_args", "transform", "split"})


class DataOrganizer:
    """Upstream's ``dataset._target_`` in the egs3 TEMPLATE; not built here.

    This project's front end reads the ``dataset:`` block itself (see the module doc), so the name
    stays importable for configs that mention it, but nothing should instantiate it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "espnet3's DataOrganizer is not instantiated: this project reads the `dataset:` block "
            "(train/valid/test entries) itself. Launch the recipe through espnet3, or build one split "
            "with espnet3.components.data.data_organizer.RecipeSplit(entries, recipe_dir)"
        )


class RecipeSplit(Dataset):
    """The concatenation of a split's entries: ``RecipeSplit([{data_src_args: {split: train}}], recipe_dir)``.

    Each entry (``{name?, data_src?, data_src_args?, transform?}``) is instantiated with
    :func:`~espnet3.components.data.dataset_module.instantiate_dataset_reference`; its
    ``transform`` (a ``{_target_: ...}`` block, or the callable it built) is applied to each of
    its items. Items come back as the recipe's ``Dataset`` and transform return them. Every
    entry's first item must have the same keys, as upstream requires, so that batches from
    different entries collate alike.
    """

    def __init__(self, entries: Sequence[Mapping[str, Any]], recipe_dir: str | Path | None = None):
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence) or not entries:
            raise ValueError(
                f"a split's entries are a non-empty list such as [{{data_src_args: {{split: train}}}}], not {entries!r}"
            )
        self._arguments = (entries, recipe_dir)
        self.datasets: list[Any] = []
        self.transforms: list[Callable[[Any], Any] | None] = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise TypeError(
                    f"dataset entry {i} is {entry!r}; write it as a mapping such as {{data_src_args: {{split: train}}}}"
                )
            unknown = sorted(set(entry) - ENTRY_KEYS)
            if unknown:
                raise ValueError(f"dataset entry {i} has unknown key(s) {unknown}; an entry takes {sorted(ENTRY_KEYS)}")
            self.datasets.append(instantiate_dataset_reference(entry, recipe_dir=recipe_dir))
            self.transforms.append(_transform(entry.get("transform"), i))
        self.ends = [0]
        for dataset in self.datasets:
            self.ends.append(self.ends[-1] + len(dataset))
        self._check_same_keys()

    def __len__(self) -> int:
        return self.ends[-1]

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # Rebuilt from the entries where it is unpickled (a spawned DataLoader worker, a Ray
        # worker): a local recipe's Dataset class lives in a module only this process registered.
        return RecipeSplit, self._arguments

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside this split of {len(self)} items")
        entry = bisect.bisect_right(self.ends, index) - 1
        return self._item(entry, index - self.ends[entry])

    def _item(self, entry: int, index: int) -> Any:
        item = self.datasets[entry][index]
        transform = self.transforms[entry]
        return item if transform is None else transform(item)

    def _check_same_keys(self) -> None:
        first: tuple[int, list[str]] | None = None
        for entry, dataset in enumerate(self.datasets):
            if len(dataset) == 0:
                continue
            item = self._item(entry, 0)
            data = item[1] if isinstance(item, tuple) and len(item) == 2 else item
            keys = sorted(data) if isinstance(data, Mapping) else []
            if first is None:
                first = (entry, keys)
            elif keys != first[1]:
                raise ValueError(
                    f"dataset entry {entry}'s items have keys {keys}, entry {first[0]}'s {first[1]}; entries "
                    "of one split must give the same keys (adjust the Dataset or add a transform)"
                )


def _transform(block: Any, entry: int) -> Callable[[Any], Any] | None:
    """The entry's transform: built from its ``_target_`` block, or already built by Hydra's recursion."""
    if block is None or callable(block):
        return block
    if isinstance(block, Mapping) and "_target_" in block:
        transform = instantiate(block)
        if callable(transform):
            return transform
    raise TypeError(
        f"dataset entry {entry}'s transform {block!r} does not give a callable; write "
        "{_target_: pkg.module.MyTransform} (a class, or a function with _partial_: true) that maps one item"
    )
