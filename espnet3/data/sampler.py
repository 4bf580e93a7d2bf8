"""ESPnet2's batch samplers, and the rule that keeps every DDP rank in step.

The batches themselves come from ESPnet2 (``build_batch_sampler`` for unsorted / sorted / folded
/ length / numel, ``build_category_batch_sampler`` for catbel / catpow) over the shape files of
:mod:`espnet3.data.shapes`, with ESPnet2's options. espnet3 adds only how they are shared, chosen
so no rank can run out of batches before the others (upstream ESPnet3 deadlocked at epoch end on
exactly that):

* ``batch_bins`` / ``batch_size`` are per training worker: one batch is what one rank holds.
  (ESPnet2 instead splits one global batch across GPUs; divide an ESPnet2 recipe's values by the
  number of workers to get the same per-GPU batches.)
* The batch list is made a multiple of ``world_size`` by splitting the batch with the most
  utterances in two, again and again. Halves keep ``batch_bins`` / ``batch_size``, and nothing is
  dropped or repeated. Only when every batch already holds a single utterance is that impossible;
  then the shortest batches are repeated, with a warning that says how many.
* Consecutive batches are grouped ``world_size`` at a time (neighbours in length order, so ranks
  doing the same step wait for each other as little as possible); each epoch shuffles the order of
  the groups with ``seed + epoch`` and rank ``r`` takes the ``r``-th batch of every group. Every rank
  thus has the same number of batches, the ranks' data are disjoint, and the union is the split.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Sampler

from espnet3.utils.espnet2_imports import import_espnet2

SEQUENCE_BATCH_TYPES = ("unsorted", "sorted", "folded", "length", "numel")
CATEGORY_BATCH_TYPES = ("catbel", "catpow")
BATCH_TYPES = SEQUENCE_BATCH_TYPES + CATEGORY_BATCH_TYPES
# What ESPnet2's category samplers read, beside the split's first data file.
CATEGORY_FILE = "category2utt"

Batch = Sequence[Hashable]


def espnet2_batches(
    loader,  # espnet3.data.loader.LoaderSpec (not imported: it imports this module)
    shape_files: Sequence[Path],
    category2utt: Path | None = None,
    epoch: int = 1,
) -> list[tuple[str, ...]]:
    """ESPnet2's batches for one split, as lists of utterance ids.

    Args:
        loader: the ``dataloader:`` options (batch type, sizes, sort orders, fold lengths...).
        shape_files: ``<name>_shape`` files; the first is the sort key.
        category2utt: the split's ``category2utt`` file (catbel / catpow).
        epoch: ESPnet2's 1-based epoch; category samplers draw new batches each epoch.
    """
    shapes = [str(p) for p in shape_files]
    if loader.batch_type in CATEGORY_BATCH_TYPES:
        build = import_espnet2("espnet2.samplers.build_batch_sampler").build_category_batch_sampler
        sampler, _ = build(
            type=loader.batch_type,
            batch_size=loader.batch_size,
            batch_bins=loader.batch_bins,
            shape_files=shapes,
            min_batch_size=loader.min_batch_size,
            max_batch_size=loader.max_batch_size,
            upsampling_factor=loader.upsampling_factor,
            dataset_scaling_factor=loader.dataset_scaling_factor,
            drop_last=loader.drop_last_iter,
            category2utt_file=str(category2utt),
            epoch=epoch,
        )
    else:
        build = import_espnet2("espnet2.samplers.build_batch_sampler").build_batch_sampler
        fold = list(loader.fold_length) if loader.batch_type == "folded" else []
        sampler = build(
            type=loader.batch_type,
            batch_size=loader.batch_size,
            batch_bins=loader.batch_bins,
            shape_files=shapes[: len(fold)] if fold else shapes,
            sort_in_batch=loader.sort_in_batch,
            sort_batch=loader.sort_batch,
            drop_last=loader.drop_last_iter,
            min_batch_size=loader.min_batch_size,
            fold_lengths=fold,
        )
    return [tuple(batch) for batch in sampler]


def split_to_multiple(batches: Sequence[Batch], world_size: int) -> list[list]:
    """Make the number of batches a multiple of ``world_size`` without dropping utterances.

    Splits the batch with the most utterances (the first such) into two contiguous halves until the
    count divides; see the module docstring for the all-singletons fallback.
    """
    num_utts = sum(len(b) for b in batches)
    if num_utts < world_size:
        raise ValueError(
            f"{num_utts} utterance(s) cannot be shared by {world_size} training workers; "
            "use fewer workers or more data"
        )
    return split_to_multiple_of(batches, world_size)


def split_to_multiple_of(batches: Sequence[Batch], size: int) -> list[list]:
    """:func:`split_to_count` up to the next multiple of ``size`` (the batches of ``size`` workers)."""
    return split_to_count(batches, -(-len(batches) // size) * size, f"{size} workers")


def split_to_count(batches: Sequence[Batch], count: int, among: str) -> list[list]:
    """``count`` batches (at least as many as given), made by halving the batch with the most
    utterances again and again; when every batch holds one utterance, the first (shortest in
    ascending order) are repeated instead, with a warning. ``among`` names who shares them."""
    batches = [list(b) for b in batches]
    while len(batches) < count:
        k = max(range(len(batches)), key=lambda j: len(batches[j]))
        if len(batches[k]) == 1:
            missing = count - len(batches)
            warnings.warn(
                f"every batch holds one utterance and {len(batches)} batches do not divide among "
                f"{among}: repeating the {missing} shortest batch(es) in every epoch "
                "(raise dataloader.batch_size / batch_bins to avoid it)",
                stacklevel=3,
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


class DistributedBatchSampler(Sampler[list]):
    """This rank's share of ``batches``: the same number of batches on every rank, every epoch.

    An epoch interrupted mid-way (a preemption, a failure after a mid-epoch checkpoint) continues
    with exactly its untrained batches (:meth:`progress`, :meth:`resume`), also with another
    number of workers: the batches the old group had not reached, in their order, are dealt to
    the new ranks (halved where needed so every rank gets the same count), so that over the
    epoch no utterance is repeated or dropped.

    Args:
        batches: All ranks' batches (utterance ids or dataset indices), in length order.
        rank: This training worker's rank.
        world_size: Number of training workers.
        shuffle: Shuffle batch order each epoch (``set_epoch``); utterances never move between batches.
        seed: Shuffling seed; must be the same on every rank.
        epoch_batches: For samplers that draw new batches every epoch (catbel, catpow):
            ``epoch -> batches`` (0-based epoch), called on every rank alike; ``batches`` is epoch 0's.
    """

    def __init__(
        self,
        batches: Sequence[Batch],
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        epoch_batches: Callable[[int], Sequence[Batch]] | None = None,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.rank = rank
        self.world_size = world_size
        self.shuffle, self.seed = shuffle, seed
        self.epoch_batches = epoch_batches
        self._base = list(batches)
        self.batches = split_to_multiple(self._base, world_size)
        self._batches_epoch = 0
        self.sampler = BatchOrder(len(self.batches) // world_size, shuffle=shuffle, seed=seed)
        self._resume: dict[str, int] | None = None
        self._resumed: tuple[int, list] | None = None  # (epoch, the rest of it as groups)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def _refresh(self) -> None:
        epoch = self.sampler.epoch
        if self.epoch_batches is None or epoch == self._batches_epoch:
            return
        self._base = list(self.epoch_batches(epoch))
        self.batches = split_to_multiple(self._base, self.world_size)
        self._batches_epoch = epoch
        self.sampler.num_groups = len(self.batches) // self.world_size

    def progress(self, batches_done: int) -> dict[str, int]:
        """What resumes this epoch exactly: the epoch, the batches each rank trained in it, the group's size."""
        return {"epoch": self.sampler.epoch, "batches_done": batches_done, "world_size": self.world_size}

    def resume(self, state: dict[str, int]) -> None:
        """Continue the epoch of :meth:`progress` after its ``batches_done`` steps (any world size)."""
        self.set_epoch(int(state["epoch"]))
        self._resume = {k: int(state[k]) for k in ("epoch", "batches_done", "world_size")}
        self._resumed = None

    def _rest(self) -> list | None:
        """The resumed epoch's untrained batches as groups of ``world_size`` (``None``: not resuming this epoch)."""
        state, epoch = self._resume, self.sampler.epoch
        if state is None or state["epoch"] != epoch:
            return None
        if self._resumed is None or self._resumed[0] != epoch:
            self._refresh()
            before = state["world_size"]
            planned = split_to_multiple(self._base, before)
            order = BatchOrder(len(planned) // before, shuffle=self.shuffle, seed=self.seed)
            order.set_epoch(epoch)
            visited = [planned[group * before + r] for group in order for r in range(before)]
            rest = visited[state["batches_done"] * before:]
            size = self.world_size
            if rest and before != size:
                rest = split_to_multiple_of(rest, size)
            self._resumed = (epoch, [rest[i:i + size] for i in range(0, len(rest) - size + 1, size)])
        return self._resumed[1]

    def __len__(self) -> int:
        """Batches per rank and epoch at this world size (Lightning fixes its epoch length from it once)."""
        self._refresh()
        rest = self._rest()
        return max(len(self.sampler), len(rest)) if rest is not None else len(self.sampler)

    def resumed_batches_done(self) -> int | None:
        """Where a resumed epoch stands in :meth:`__len__`'s terms: its batches minus those left."""
        rest = self._rest()
        return None if rest is None else len(self) - len(rest)

    def __iter__(self) -> Iterator[list]:
        rest = self._rest()
        if rest is not None:
            for group in rest:
                yield list(group[self.rank])
            return
        self._refresh()
        for group in self.sampler:
            yield list(self.batches[group * self.world_size + self.rank])


def category_epoch_batches(loader, shape_files: Sequence[Path], category2utt: Path) -> Callable[[int], list]:
    """A picklable ``epoch -> batches`` for ESPnet2's category samplers (1-based epochs there)."""
    return functools.partial(_category_batches, loader, tuple(shape_files), category2utt)


def _category_batches(loader, shape_files, category2utt, epoch: int) -> list[tuple[str, ...]]:
    return espnet2_batches(loader, shape_files, category2utt, epoch=epoch + 1)


def padding_fraction(batches: Sequence[Batch], lengths: dict | Sequence[int]) -> float:
    """Share of the padded ``(batch, max length)`` tensors that is padding, over all batches."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return (padded - real) / padded
