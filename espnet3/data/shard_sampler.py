"""Batches of a sharded split: shard order shuffled per epoch, a shuffle buffer, ESPnet2's batching.

Every rank computes the whole epoch's plan from the manifest alone (no communication, no shard
opened), so all ranks agree on it:

1. **Pieces.** Each shard is a piece; while there are fewer pieces than DataLoader workers in the
   job (``world_size * max(1, num_workers)``: a small valid set), the largest piece is halved.
2. **Order.** Each epoch the pieces are permuted with ``seed + epoch`` (train only) and dealt
   round-robin to ranks, then within a rank to its DataLoader workers ("slots").
3. **Buffer and batches.** A slot's utterances, in piece order, are cut into chunks of
   ``dataloader.shuffle_buffer``; within a chunk, ESPnet2's own batch sampler (``numel`` by
   ``batch_bins`` etc., on the manifest's shapes) makes the batches, whose order is shuffled.
4. **Same count everywhere.** Every slot gets as many batches as the fullest one by halving its
   largest batches (:func:`espnet3.data.sampler.split_to_count`): nothing is dropped, and all
   ranks take the same number of steps.
5. **Interleaving.** A DataLoader hands batch ``i`` to worker ``i % num_workers``; the rank's
   batches are its slots' lists interleaved in that order, so each worker reads only its own
   pieces, front to back (:class:`espnet3.data.shard_format.ShardReader`).

Because the plan is a pure function of (manifest, options, seed, epoch, world size), a restart
resumes an epoch exactly: :meth:`ShardBatchSampler.resume` skips the batches done.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Sampler

from espnet3.data.sampler import espnet2_batches, split_to_count, split_to_multiple_of
from espnet3.data.shard_format import ShardManifest


class _Epoch(Sampler[int]):
    """What Lightning calls ``set_epoch`` on (``batch_sampler.sampler``)."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


def pieces(manifest: ShardManifest, slots: int) -> list[list[str]]:
    """The shards' key lists, the largest halved until there are at least ``slots``."""
    keys = [list(shard.keys) for shard in manifest.shards]
    total = sum(len(k) for k in keys)
    return split_to_count(keys, min(slots, total), "the DataLoader workers") if len(keys) < slots else keys


def _chunk_batches(loader, chunk: Sequence[str], shape_lines: dict[str, dict[str, str]], work: Path
                   ) -> list[tuple[str, ...]]:
    files = []
    for name, lines in shape_lines.items():
        path = work / f"{name}_shape"
        path.write_text("".join(f"{k} {lines[k]}\n" for k in chunk), encoding="utf-8")
        files.append(path)
    return espnet2_batches(loader, files)


def epoch_plan(manifest: ShardManifest, loader, *, world_size: int, num_workers: int, shuffle: bool, seed: int,
               epoch: int) -> list[list[list[str]]]:
    """``plan[rank]``: the rank's batches (utterance ids) in DataLoader order, for one epoch."""
    per_rank = max(1, num_workers)
    units = pieces(manifest, world_size * per_rank)
    order = np.random.RandomState(seed + epoch).permutation(len(units)).tolist() if shuffle else range(len(units))
    slots: list[list[str]] = [[] for _ in range(world_size * per_rank)]
    for position, index in enumerate(order):
        rank, turn = position % world_size, position // world_size
        slots[rank * per_rank + turn % per_rank].extend(units[index])
    shape_lines = {name: manifest.shape_lines(name) for name in manifest.names}
    buffer = loader.shuffle_buffer
    slot_batches: list[list[list[str]]] = []
    with tempfile.TemporaryDirectory(prefix="espnet3-shard-plan-") as work:
        for s, keys in enumerate(slots):
            rng = np.random.RandomState([seed, epoch, s])
            batches: list[list[str]] = []
            for start in range(0, len(keys), buffer):
                chunk = [list(b) for b in _chunk_batches(loader, keys[start : start + buffer], shape_lines, Path(work))]
                if shuffle:
                    chunk = [chunk[i] for i in rng.permutation(len(chunk))]
                batches.extend(chunk)
            slot_batches.append(batches)
    count = max(len(b) for b in slot_batches)
    slot_batches = [split_to_count(b, count, f"{world_size * per_rank} DataLoader workers") if b else b
                    for b in slot_batches]
    plan = []
    for rank in range(world_size):
        mine = slot_batches[rank * per_rank : (rank + 1) * per_rank]
        plan.append([mine[w][i] for i in range(count) for w in range(per_rank) if i < len(mine[w])])
    # Only a split with fewer utterances than DataLoader workers leaves slots empty; ranks must
    # still take the same number of steps.
    most = max(len(p) for p in plan)
    return [split_to_count(p, most, f"{world_size} workers") if len(p) < most else p for p in plan]


class ShardBatchSampler(Sampler[list]):
    """This rank's batches of a sharded split, epoch by epoch (see the module docstring).

    ``num_workers`` must be the DataLoader's, so that each of its processes gets its own pieces.
    """

    def __init__(self, manifest: ShardManifest, loader, *, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, shuffle: bool = False, seed: int = 0):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.manifest, self.loader = manifest, loader
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.shuffle, self.seed = shuffle, seed
        self.sampler = _Epoch()
        self._plans: dict[int, list[list[str]]] = {}
        self._resume: dict[str, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def _full(self, epoch: int) -> list[list[str]]:
        return epoch_plan(self.manifest, self.loader, world_size=self.world_size, num_workers=self.num_workers,
                          shuffle=self.shuffle, seed=self.seed, epoch=epoch)[self.rank]

    def _plan(self) -> tuple[list[list[str]], int]:
        """This epoch's batches for this rank from where it resumes, and the batches before that."""
        epoch = self.sampler.epoch
        if epoch not in self._plans:
            self._plans = {epoch: self._rest(epoch) or (self._full(epoch), 0)}
        return self._plans[epoch]

    def _rest(self, epoch: int) -> tuple[list[list[str]], int] | None:
        """A resumed epoch: the rest of the old group's plan. With another group, that rest is
        interleaved across the old ranks, halved to a multiple of the new size and dealt in turn
        (DataLoader workers then read shards out of turn, which the reader allows)."""
        state = self._resume
        if state is None or state["epoch"] != epoch:
            return None
        done = state["batches_done"]
        if (state["world_size"], state["num_workers"]) == (self.world_size, self.num_workers):
            full = self._full(epoch)
            return full[done:], done
        old = epoch_plan(self.manifest, self.loader, world_size=state["world_size"], num_workers=state["num_workers"],
                         shuffle=self.shuffle, seed=self.seed, epoch=epoch)
        rest = [plan[i] for i in range(done, max(len(p) for p in old)) for plan in old if i < len(plan)]
        size = self.world_size
        rest = split_to_multiple_of(rest, size) if rest else []
        mine = rest[self.rank::size]
        return mine, max(0, len(self._full(epoch)) - len(mine))

    def __len__(self) -> int:
        """Batches per rank and epoch at this world size (Lightning fixes its epoch length from it once)."""
        plan, before = self._plan()
        return before + len(plan)

    def resumed_batches_done(self) -> int | None:
        """Where a resumed epoch stands in :meth:`__len__`'s terms (``None``: not resuming this epoch)."""
        if self._resume is None or self._resume["epoch"] != self.sampler.epoch:
            return None
        return self._plan()[1]

    def __iter__(self) -> Iterator[list]:
        yield from (list(b) for b in self._plan()[0])

    def progress(self, batches_done: int) -> dict[str, int]:
        """What resumes this epoch exactly: the epoch, how many of its batches each rank trained, the group."""
        return {"epoch": self.sampler.epoch, "batches_done": batches_done, "world_size": self.world_size,
                "num_workers": self.num_workers}

    def resume(self, state: dict[str, int]) -> None:
        """Continue the epoch of :meth:`progress` after its ``batches_done`` batches (any group size)."""
        self._resume = {"num_workers": self.num_workers, **{k: int(v) for k, v in state.items()}}
        self._plans = {}
        self.set_epoch(self._resume["epoch"])
