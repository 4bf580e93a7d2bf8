"""Length-aware batching (ESPnet2's numel / sorted / unsorted) that stays in step across DDP ranks.

Distribution rule, chosen so no rank can run out of batches before the others (upstream ESPnet3
deadlocked at epoch end on exactly that):

* ``batch_bins`` / ``batch_size`` are per training worker: one batch is what one rank holds.
  (ESPnet2 instead splits one global batch across GPUs; divide an ESPnet2 recipe's values by the
  number of workers to get the same per-GPU batches.)
* The length-sorted batch list is made a multiple of ``world_size`` by splitting the batch with the
  most utterances in two, again and again. Halves keep ``batch_bins`` / ``batch_size``, and nothing
  is dropped or repeated. Only when every batch already holds a single utterance is that impossible;
  then the shortest batches are repeated, with a warning that says how many.
* Consecutive batches are grouped ``world_size`` at a time (neighbours in length order, so ranks
  doing the same step wait for each other as little as possible); each epoch shuffles the order of
  the groups with ``seed + epoch`` and rank ``r`` takes the ``r``-th batch of every group. Every rank
  thus has the same number of batches, the ranks' data are disjoint, and the union is the split.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

BATCH_TYPES = ("numel", "sorted", "unsorted")


def _numel_batches(lengths: Sequence[Sequence[int]], order: list[int], batch_bins: int) -> list[list[int]]:
    # Unlike ESPnet2's NumElementsBatchSampler, which closes a batch *after* the utterance that
    # overflows it, a batch is closed *before* it, so batch_bins is a hard cap on the padded size
    # except for a single utterance that alone exceeds it.
    batches: list[list[int]] = []
    current: list[int] = []
    maxima: list[int] = []
    for i in order:
        grown = [max(m, l) for m, l in zip(maxima, lengths[i])] if current else list(lengths[i])
        if current and (len(current) + 1) * sum(grown) > batch_bins:
            batches.append(current)
            current, grown = [], list(lengths[i])
        current.append(i)
        maxima = grown
    batches.append(current)
    return batches


def _even_chunks(order: list[int], batch_size: int) -> list[list[int]]:
    n_batches = math.ceil(len(order) / batch_size)
    return [order[k * len(order) // n_batches : (k + 1) * len(order) // n_batches] for k in range(n_batches)]


def make_batches(
    lengths: Sequence[Sequence[int]],
    batch_type: str,
    *,
    batch_bins: int | None = None,
    batch_size: int | None = None,
) -> list[list[int]]:
    """Group utterance indices into batches.

    Args:
        lengths: Per utterance, the length of each padded stream, e.g. ``(num_samples, num_tokens)``;
            the first stream is the sort key. Every stream is 1-d per frame (raw audio, token ids),
            so an utterance's size is just its lengths.
        batch_type: ``numel``: ascending by length, as many utterances as fit in ``batch_bins``
            padded elements (batch size times the longest of each stream, summed over streams).
            ``sorted``: ascending by length, at most ``batch_size`` each. ``unsorted``: input order,
            at most ``batch_size`` each.

    Returns:
        Batches in ascending length order (input order for ``unsorted``), longest utterance first
        inside each batch, as ESPnet2 does for packed RNNs.
    """
    if not lengths:
        raise ValueError("cannot batch an empty data split")
    if batch_type not in BATCH_TYPES:
        raise ValueError(f"`dataloader.batch_type` is {batch_type!r}; expected one of {', '.join(BATCH_TYPES)}")
    if batch_type == "unsorted":
        return _even_chunks(list(range(len(lengths))), _positive(batch_size, "batch_size"))
    order = sorted(range(len(lengths)), key=lambda i: lengths[i][0])
    if batch_type == "sorted":
        batches = _even_chunks(order, _positive(batch_size, "batch_size"))
    else:
        batches = _numel_batches(lengths, order, _positive(batch_bins, "batch_bins"))
    return [sorted(b, key=lambda i: -lengths[i][0]) for b in batches]


def _positive(value: int | None, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`dataloader.{key}` must be a positive integer, got {value!r}")
    return value


def split_to_multiple(batches: Sequence[Sequence[int]], world_size: int) -> list[list[int]]:
    """Make the number of batches a multiple of ``world_size`` without dropping utterances.

    Splits the batch with the most utterances (the first such) into two contiguous halves until the
    count divides; see the module docstring for the all-singletons fallback.
    """
    batches = [list(b) for b in batches]
    num_utts = sum(len(b) for b in batches)
    if num_utts < world_size:
        raise ValueError(
            f"{num_utts} utterance(s) cannot be shared by {world_size} training workers; "
            "use fewer workers or more data"
        )
    while len(batches) % world_size:
        k = max(range(len(batches)), key=lambda j: len(batches[j]))
        if len(batches[k]) == 1:
            missing = world_size - len(batches) % world_size
            warnings.warn(
                f"every batch holds one utterance and {len(batches)} batches do not divide among "
                f"{world_size} workers: repeating the {missing} shortest batch(es) in every epoch "
                "(raise dataloader.batch_size / batch_bins to avoid it)",
                stacklevel=2,
            )
            return batches + [list(b) for b in batches[:missing]]
        half = len(batches[k]) // 2
        batches[k : k + 1] = [batches[k][:half], batches[k][half:]]
    return batches


class BatchOrder(Sampler[int]):
    """The order in which groups of ``world_size`` neighbouring batches are visited this epoch.

    Exposed as ``DistributedBatchSampler.sampler`` because Lightning calls ``set_epoch`` on
    ``dataloader.batch_sampler.sampler`` (not on the batch sampler itself) each epoch.
    """

    def __init__(self, num_groups: int, *, shuffle: bool, seed: int):
        self.num_groups = num_groups
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_groups

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_groups))
        # Same seed on every rank, so all ranks agree on the order without communicating.
        return iter(np.random.RandomState(self.seed + self.epoch).permutation(self.num_groups).tolist())


class DistributedBatchSampler(Sampler[list[int]]):
    """This rank's share of ``batches``: the same number of batches on every rank, every epoch.

    Args:
        batches: All ranks' batches (indices into the dataset), in length order.
        rank: This training worker's rank.
        world_size: Number of training workers.
        shuffle: Shuffle batch order each epoch (``set_epoch``); utterances never move between batches.
        seed: Shuffling seed; must be the same on every rank.
    """

    def __init__(
        self,
        batches: Sequence[Sequence[int]],
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.batches = split_to_multiple(batches, world_size)
        self.rank = rank
        self.world_size = world_size
        self.sampler = BatchOrder(len(self.batches) // world_size, shuffle=shuffle, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[int]]:
        for group in self.sampler:
            yield list(self.batches[group * self.world_size + self.rank])


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of the padded ``(batch, max length)`` tensors that is padding, over all batches."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return (padded - real) / padded
