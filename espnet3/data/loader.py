"""The ``dataloader:`` section of train.yaml and the DataLoaders built from it.

Loaders take ``rank`` and ``world_size`` explicitly because the launcher runs Lightning with
``use_distributed_sampler=False``: under Ray Train, Lightning would otherwise swap in a
``DistributedSampler`` that knows nothing about length-sorted batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import DataLoader, Dataset

from espnet3.errors import DataError
from espnet3.data.sampler import BATCH_TYPES, CATEGORY_BATCH_TYPES, DistributedBatchSampler
from espnet3.data.spec import plain_mapping

# Most DataLoader processes a GPU worker starts on its own: beyond this, decoding and
# collation of speech batches stop being the bottleneck and only add memory.
MAX_AUTO_WORKERS = 8


def _positive_int(value: Any, key: str, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise DataError(f"`dataloader.{key}` must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class LoaderSpec:
    """The parsed ``dataloader:`` section (ESPnet2's option names; sizes are per training worker).

    Attributes:
        batch_type: one of ESPnet2's batch types: ``unsorted``, ``sorted``, ``folded`` (by
            ``batch_size``), ``length``, ``numel`` (by ``batch_bins``), ``catbel``, ``catpow``
            (category-balanced, need ``category2utt`` beside the first data file).
        batch_bins: padded elements in one worker's batch (``numel``, ``length``, ``catpow``).
        batch_size: utterances in one worker's batch (``unsorted``, ``sorted``, ``folded``, ``catbel``).
        sort_in_batch, sort_batch: ``descending`` / ``ascending``, as in ESPnet2.
        fold_length: ``folded``: one length per data stream, in triple order.
        min_batch_size, max_batch_size: bounds for the variable-size samplers.
        upsampling_factor, dataset_scaling_factor: ``catpow``'s options.
        drop_last_iter: drop the last, short batch (ESPnet2's ``drop_last_iter``).
        num_workers: DataLoader processes per training worker; ``null``: 0 on CPU workers (they
            share the cores with training), on GPU workers one less than the CPUs each reserves.
        pin_memory: ``null``: on for GPU workers.
        prefetch_factor: batches each DataLoader process prepares ahead (with ``num_workers`` > 0).
        persistent_workers: keep DataLoader processes across epochs (with ``num_workers`` > 0).
        shuffle_buffer: sharded data (:mod:`espnet3.data.shard_sampler`): utterances batched
            together from each DataLoader worker's stream of shards; a larger buffer mixes more.
    """

    batch_type: str = "numel"
    batch_bins: int = 1_000_000
    batch_size: int = 20
    sort_in_batch: str = "descending"
    sort_batch: str = "ascending"
    fold_length: tuple[int, ...] = field(default_factory=tuple)
    min_batch_size: int = 1
    max_batch_size: int | None = None
    upsampling_factor: float = 0.5
    dataset_scaling_factor: float = 1.2
    drop_last_iter: bool = False
    num_workers: int | None = None
    pin_memory: bool | None = None
    prefetch_factor: int = 2
    persistent_workers: bool = True
    shuffle_buffer: int = 2000

    def __post_init__(self) -> None:
        if self.batch_type not in BATCH_TYPES:
            raise DataError(
                f"`dataloader.batch_type` is {self.batch_type!r}; expected one of {', '.join(BATCH_TYPES)}"
            )
        for key in ("batch_bins", "batch_size", "min_batch_size", "prefetch_factor", "shuffle_buffer"):
            _positive_int(getattr(self, key), key)
        if self.max_batch_size is not None:
            _positive_int(self.max_batch_size, "max_batch_size")
        if self.num_workers is not None:
            _positive_int(self.num_workers, "num_workers", allow_zero=True)
        for key in ("sort_in_batch", "sort_batch"):
            if getattr(self, key) not in ("ascending", "descending"):
                raise DataError(f"`dataloader.{key}` must be ascending or descending, got {getattr(self, key)!r}")
        for key in ("upsampling_factor", "dataset_scaling_factor"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise DataError(f"`dataloader.{key}` must be a positive number, got {value!r}")
        for key in ("drop_last_iter", "persistent_workers"):
            if not isinstance(getattr(self, key), bool):
                raise DataError(f"`dataloader.{key}` must be true or false, got {getattr(self, key)!r}")
        if self.pin_memory is not None and not isinstance(self.pin_memory, bool):
            raise DataError(f"`dataloader.pin_memory` must be true, false or null, got {self.pin_memory!r}")
        if self.batch_type == "folded":
            if not self.fold_length:
                raise DataError(
                    "`dataloader.fold_length` is required with `batch_type: folded`: one length per data "
                    "stream in triple order, e.g. [80000, 150] for speech and text"
                )
            for value in self.fold_length:
                _positive_int(value, "fold_length[]")

    @classmethod
    def from_config(cls, section: Any) -> LoaderSpec:
        """Parse ``cfg.dataloader``; unknown keys raise ``DataError`` naming the key."""
        try:
            raw = plain_mapping(section, "dataloader", tuple(cls.__dataclass_fields__))
        except ValueError as err:
            raise DataError(str(err)) from None
        if "fold_length" in raw:
            fold = raw["fold_length"]
            raw["fold_length"] = tuple(fold) if isinstance(fold, (list, tuple)) else (fold,)
        return cls(**raw)

    @property
    def by_category(self) -> bool:
        return self.batch_type in CATEGORY_BATCH_TYPES

    def workers_for(self, cpus_per_worker: float, use_gpu: bool) -> int:
        """DataLoader processes for a training worker that reserved ``cpus_per_worker`` CPUs."""
        if self.num_workers is not None:
            return self.num_workers
        if not use_gpu:
            return 0
        return max(0, min(MAX_AUTO_WORKERS, int(cpus_per_worker) - 1))


def make_dataloader(
    dataset: Dataset,
    batch_sampler: DistributedBatchSampler,
    collate_fn: Callable,
    loader: LoaderSpec,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    extra: dict[str, Any] = {}
    if num_workers > 0:
        # A Ray worker runs gRPC threads, and forking a threaded process can deadlock the child;
        # forkserver children start from a clean process. Persistent workers pay that start once.
        extra = {
            "multiprocessing_context": "forkserver",
            "persistent_workers": loader.persistent_workers,
            "prefetch_factor": loader.prefetch_factor,
        }
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        **extra,
    )
