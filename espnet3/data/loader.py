"""The ``dataloader:`` section of train.yaml and the DataLoaders built from it.

Loaders take ``rank`` and ``world_size`` explicitly because the launcher runs Lightning with
``use_distributed_sampler=False``: under Ray Train, Lightning would otherwise swap in a
``DistributedSampler`` that knows nothing about length-sorted batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader

from espnet3.data.datadir import DataSpec, plain_mapping, read_datadir
from espnet3.data.dataset import SpeechTextDataset
from espnet3.data.sampler import BATCH_TYPES, DistributedBatchSampler, make_batches
from espnet3.data.tokenizer import TextTokenizer
from espnet3.utils.espnet2_imports import import_espnet2

_LOADER_KEYS = ("batch_type", "batch_bins", "batch_size", "num_workers")


@dataclass(frozen=True)
class LoaderSpec:
    """The parsed ``dataloader:`` section.

    Attributes:
        batch_type: ``numel`` (by ``batch_bins``), ``sorted`` or ``unsorted`` (by ``batch_size``).
        batch_bins: Most padded speech + text elements in one worker's batch (``numel``).
        batch_size: Most utterances in one worker's batch (``sorted`` / ``unsorted``).
        num_workers: DataLoader worker processes per training worker.
    """

    batch_type: str = "numel"
    batch_bins: int = 1_000_000
    batch_size: int = 20
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.batch_type not in BATCH_TYPES:
            raise ValueError(
                f"`dataloader.batch_type` is {self.batch_type!r}; expected one of {', '.join(BATCH_TYPES)}"
            )
        for key in ("batch_bins", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`dataloader.{key}` must be a positive integer, got {value!r}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"`dataloader.num_workers` must be an integer >= 0, got {self.num_workers!r}")

    @classmethod
    def from_config(cls, section: Any) -> LoaderSpec:
        """Parse ``cfg.dataloader``; unknown keys raise ``ValueError`` naming the key."""
        return cls(**plain_mapping(section, "dataloader", _LOADER_KEYS))


def build_dataset(data: DataSpec, split: str) -> SpeechTextDataset:
    """The dataset of one split; ``data.token_list`` must exist (``prepare_token_list``)."""
    if not data.token_list.is_file():
        raise ValueError(
            f"token list {data.token_list} does not exist yet; call "
            "espnet3.data.tokenizer.prepare_token_list(data_spec) on the driver first"
        )
    return SpeechTextDataset.from_datadir(read_datadir(data.split_dir(split)), TextTokenizer.from_spec(data))


def collate_fn():
    """ESPnet2's collation: speech padded with 0.0, token ids with -1, ``*_lengths`` added."""
    collate_module = import_espnet2("espnet2.train.collate_fn")
    return collate_module.CommonCollateFn(float_pad_value=0.0, int_pad_value=-1)


def make_dataloader(
    dataset: SpeechTextDataset, batch_sampler: DistributedBatchSampler, num_workers: int
) -> DataLoader:
    extra: dict[str, Any] = {}
    if num_workers > 0:
        # A Ray worker runs gRPC threads, and forking a threaded process can deadlock the child;
        # forkserver children start from a clean process. Persistent workers pay that start once.
        extra = {"multiprocessing_context": "forkserver", "persistent_workers": True}
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn(), num_workers=num_workers, **extra)


def dataloader_from_specs(
    data: DataSpec, loader: LoaderSpec, split: str, *, rank: int = 0, world_size: int = 1, seed: int = 0
) -> DataLoader:
    """A DataLoader over ``split`` for one training worker; only ``train`` is shuffled.

    Its ``batch_sampler`` has ``set_epoch(epoch)``, which Lightning calls (through
    ``batch_sampler.sampler``) at every epoch start; other loops should call it themselves.
    """
    dataset = build_dataset(data, split)
    batches = make_batches(
        dataset.lengths, loader.batch_type, batch_bins=loader.batch_bins, batch_size=loader.batch_size
    )
    sampler = DistributedBatchSampler(
        batches, rank=rank, world_size=world_size, shuffle=split == "train", seed=seed
    )
    return make_dataloader(dataset, sampler, loader.num_workers)


def build_dataloader(cfg: Any, split: str, rank: int = 0, world_size: int = 1) -> DataLoader:
    """:func:`dataloader_from_specs` for a whole train.yaml config (``data``, ``dataloader``, ``seed``)."""
    return dataloader_from_specs(
        DataSpec.from_config(cfg["data"]),
        LoaderSpec.from_config(cfg["dataloader"]),
        split,
        rank=rank,
        world_size=world_size,
        seed=int(cfg.get("seed", 0) or 0),
    )
