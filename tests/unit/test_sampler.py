import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch

from data_utils import make_digits_dirs, resume_in_another_group, train_config, write_datadir
from espnet3.data.loader import LoaderSpec
from espnet3.data.plan import build_data_plan
from espnet3.data.sampler import (
    DistributedBatchSampler,
    category_epoch_batches,
    espnet2_batches,
    padding_fraction,
    split_to_multiple,
)

RNG = np.random.default_rng(0)
LENGTHS = [(int(s), int(t)) for s, t in zip(RNG.integers(100, 2000, 203), RNG.integers(1, 40, 203))]


def _padded_bins(batch, lengths):
    return len(batch) * (max(lengths[i][0] for i in batch) + max(lengths[i][1] for i in batch))


def _epoch(batches, world_size, epoch, shuffle=True, seed=3):
    per_rank = []
    for rank in range(world_size):
        sampler = DistributedBatchSampler(batches, rank=rank, world_size=world_size, shuffle=shuffle, seed=seed)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
        assert len(per_rank[-1]) == len(sampler)
    return per_rank


def _shape_files(tmp_path, lengths=LENGTHS):
    """speech_shape / text_shape files for LENGTHS, keyed by index strings."""
    speech, text = tmp_path / "speech_shape", tmp_path / "text_shape"
    speech.write_text("".join(f"{i} {s}\n" for i, (s, _) in enumerate(lengths)))
    text.write_text("".join(f"{i} {t}\n" for i, (_, t) in enumerate(lengths)))
    return [speech, text]


def _batches(tmp_path, lengths=LENGTHS, **loader):
    """ESPnet2's batches over ``lengths``, as lists of ints (utterance index)."""
    spec = LoaderSpec(**loader)
    return [[int(k) for k in b] for b in espnet2_batches(spec, _shape_files(tmp_path, lengths))]


def test_numel_batches_are_espnet2s_numel_batches(tmp_path):
    batches = _batches(tmp_path, batch_type="numel", batch_bins=8000)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    for b in batches:
        # ESPnet2 counts len(batch) * (lengths of the utterance just added) and closes a batch
        # right after the one that overflows batch_bins (the longest, first in the batch)
        if len(b) > 1:
            assert (len(b) - 1) * sum(LENGTHS[b[1]]) <= 8000 < len(b) * sum(LENGTHS[b[0]]) or b is batches[-1]
        assert [LENGTHS[i][0] for i in b] == sorted((LENGTHS[i][0] for i in b), reverse=True)
    firsts = [LENGTHS[b[0]][0] for b in batches]
    assert firsts == sorted(firsts)  # ascending batch order


@pytest.mark.parametrize("batch_type", ["sorted", "unsorted", "folded", "length"])
def test_every_espnet2_batch_type_covers_the_split_once(tmp_path, batch_type):
    batches = _batches(tmp_path, batch_type=batch_type, batch_size=10, batch_bins=20000, fold_length=(800, 20))
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    if batch_type in ("sorted", "unsorted"):  # ESPnet2 spreads the remainder: 203 = 17 x 10 + 3 x 11
        assert sorted(len(b) for b in batches) == [10] * 17 + [11] * 3
    if batch_type == "unsorted":
        assert [i for b in batches for i in b] == list(range(len(LENGTHS)))


def test_category_balanced_batches_draw_anew_each_epoch(tmp_path):
    shapes = _shape_files(tmp_path)
    (tmp_path / "category2utt").write_text("".join(f"c{c} {' '.join(str(i) for i in range(c, 203, 4))}\n" for c in range(4)))
    spec = LoaderSpec(batch_type="catbel", batch_size=8)
    epoch_batches = category_epoch_batches(spec, shapes, tmp_path / "category2utt")
    first, second = epoch_batches(0), epoch_batches(1)
    assert first != second and first == epoch_batches(0)
    assert all(len({int(k) % 4 for k in b}) == len(b) or len(b) > 4 for b in first)
    sampler = DistributedBatchSampler(first, rank=1, world_size=2, shuffle=True, seed=1, epoch_batches=epoch_batches)
    _set_sampler_epoch(torch.utils.data.DataLoader(range(3), batch_sampler=sampler), 1)
    fixed = DistributedBatchSampler(second, rank=1, world_size=2, shuffle=True, seed=1)
    fixed.set_epoch(1)
    assert list(sampler) == list(fixed) and len(sampler) == len(fixed)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_every_rank_gets_same_batch_count_and_every_utterance_once_per_epoch(tmp_path, world_size):
    batches = _batches(tmp_path, batch_type="numel", batch_bins=8000)
    orders = []
    for epoch in range(3):
        per_rank = _epoch(batches, world_size, epoch)
        assert len({len(r) for r in per_rank}) == 1
        seen = Counter(i for r in per_rank for b in r for i in b)
        assert sorted(seen) == list(range(len(LENGTHS))) and set(seen.values()) == {1}
        for r in per_rank:  # whole ESPnet2 batches or halves of them, never more
            assert all((len(b) - 1) * sum(LENGTHS[b[1]]) <= 8000 for b in r if len(b) > 1)
        orders.append(per_rank[0])
    assert orders[0] != orders[1] != orders[2]  # reshuffled per epoch
    assert _epoch(batches, world_size, 1) == _epoch(batches, world_size, 1)  # deterministic from the seed


def test_split_to_multiple_splits_largest_batches_without_dropping():
    batches = [[0, 1, 2, 3], [4], [5, 6]]
    out = split_to_multiple(batches, 4)
    assert len(out) == 4 and sorted(i for b in out for i in b) == list(range(7))
    assert out == [[0, 1], [2, 3], [4], [5, 6]]
    with pytest.raises(ValueError, match="3 utterance.*4 training workers"):
        split_to_multiple([[0, 1, 2]], 4)


def test_all_singleton_batches_repeat_with_a_warning():
    with pytest.warns(UserWarning, match="repeating the 1 shortest batch"):
        out = split_to_multiple([[0], [1], [2]], 2)
    assert out == [[0], [1], [2], [0]]


def test_unshuffled_sampler_keeps_length_order_and_lightning_reaches_set_epoch(tmp_path):
    batches = _batches(tmp_path, batch_type="numel", batch_bins=8000)
    assert _epoch(batches, 2, 0, shuffle=False) == _epoch(batches, 2, 5, shuffle=False)
    assert [b for b in _epoch(batches, 1, 0, shuffle=False)[0]] == split_to_multiple(batches, 1)
    sampler = DistributedBatchSampler(batches, shuffle=True, seed=1)
    loader = torch.utils.data.DataLoader(range(len(LENGTHS)), batch_sampler=sampler)
    _set_sampler_epoch(loader, 4)
    assert sampler.sampler.epoch == 4
    assert pickle.loads(pickle.dumps(sampler)).sampler.epoch == 4


def test_numel_sorting_pads_less_than_random_batches(tmp_path):
    lengths = [s for s, _ in LENGTHS]
    sorted_batches = _batches(tmp_path, batch_type="sorted", batch_size=8)
    random_batches = _batches(tmp_path, batch_type="unsorted", batch_size=8)
    assert padding_fraction([[0, 1]], [3, 1]) == pytest.approx(2 / 6)
    assert padding_fraction(sorted_batches, lengths) < 0.2 * padding_fraction(random_batches, lengths)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    dirs = make_digits_dirs(root, num_train=24, num_valid=8)
    dirs["test"] = write_datadir(root / "test", [("t1", 1000, "ONE"), ("t2", 3000, "TWO THREE")])
    return build_data_plan({**train_config(root, dirs), "task": "asr1", "model": {}})


def test_collated_batches_use_espnet2_padding_values(digits):
    ids, batch = next(iter(digits.dataloader("test")))
    assert ids == ["t2", "t1"] and set(batch) == {"speech", "speech_lengths", "text", "text_lengths"}
    assert batch["speech"].dtype == torch.float32 and batch["text"].dtype == torch.int64
    assert batch["speech_lengths"].tolist() == [3000, 1000] and batch["text_lengths"].tolist() == [9, 3]
    assert torch.all(batch["speech"][1, 1000:] == 0.0) and batch["speech"][1, :1000].abs().max() > 0.1
    assert batch["text"][1, 3:].tolist() == [-1] * 6 and (batch["text"][0] >= 0).all()


def test_shapes_are_token_counts_after_preprocessing_and_are_cached(digits):
    shapes = digits.shapes("test")
    assert shapes.names == ("speech", "text")
    assert (digits.stats_dir / "test" / "text_shape").read_text() == "t1 3\nt2 9\n"
    assert (digits.stats_dir / "test" / "speech_shape").read_text() == "t1 1000\nt2 3000\n"
    stamp = (digits.stats_dir / "test" / "shapes.json").stat().st_mtime_ns
    assert digits.shapes("test") == shapes
    assert (digits.stats_dir / "test" / "shapes.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_loaders_share_batch_count_and_partition_the_split(digits, world_size):
    loaders = [digits.dataloader("train", rank=r, world_size=world_size) for r in range(world_size)]
    for epoch in (0, 1):
        for loader in loaders:
            loader.batch_sampler.set_epoch(epoch)
        seen = [[u for ids, _ in loader for u in ids] for loader in loaders]
        assert len({len(loader) for loader in loaders}) == 1
        everything = [u for s in seen for u in s]
        assert sorted(everything) == sorted(f"tr{k:04d}" for k in range(24))


def test_loader_with_worker_processes_yields_the_same_batches(digits):
    with_workers = [ids for ids, _ in digits.dataloader("valid", num_workers=1)]
    assert with_workers == [ids for ids, _ in digits.dataloader("valid")]


def test_loader_spec_names_bad_keys():
    assert LoaderSpec.from_config({"batch_type": "sorted", "batch_size": 3}).batch_size == 3
    with pytest.raises(ValueError, match="unknown key.*`dataloader`: batch_bin"):
        LoaderSpec.from_config({"batch_bin": 3})
    with pytest.raises(ValueError, match="`dataloader.batch_type`.*numel.*catbel"):
        LoaderSpec.from_config({"batch_type": "bucket"})
    with pytest.raises(ValueError, match="`dataloader.batch_bins` must be an integer >= 1"):
        LoaderSpec.from_config({"batch_bins": 0})
    with pytest.raises(ValueError, match="`dataloader.fold_length` is required"):
        LoaderSpec.from_config({"batch_type": "folded"})
    assert LoaderSpec.from_config({"num_workers": None}).workers_for(8, use_gpu=True) == 7
    assert LoaderSpec.from_config({"num_workers": None}).workers_for(8, use_gpu=False) == 0


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 3)])
def test_an_epoch_resumed_with_another_number_of_workers_trains_every_utterance_once(before, after):
    """A preemption mid-epoch, then a group of another size: the epoch's multiset of utterances is whole."""
    batches = [[f"u{i}-{j}" for j in range(1 + i % 3)] for i in range(23)]
    old = [DistributedBatchSampler(batches, rank=r, world_size=before, shuffle=True, seed=4) for r in range(before)]
    new = [DistributedBatchSampler(batches, rank=r, world_size=after, shuffle=True, seed=4) for r in range(after)]
    seen, length = resume_in_another_group(old, new, epoch=2, done=3)
    assert sorted(seen) == sorted(u for b in batches for u in b) and max(seen.values()) == 1
    fresh = DistributedBatchSampler(batches, rank=0, world_size=after, shuffle=True, seed=4)
    rest = len(list(new[0]))
    assert length == max(len(fresh), rest), "Lightning fixes the epoch length once: the usual one"
    for sampler in new:  # the next epoch is whole again
        sampler.set_epoch(3)
    assert sorted(u for s in new for b in s for u in b) == sorted(u for b in batches for u in b)
