import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch

from data_utils import make_digits_dirs, train_config, write_datadir
from espnet3.data.loader import LoaderSpec, build_dataloader
from espnet3.data.sampler import DistributedBatchSampler, make_batches, padding_fraction, split_to_multiple
from espnet3.data.tokenizer import prepare_token_list
from espnet3.data.datadir import DataSpec

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


def test_numel_batches_respect_bins_except_single_overlong_utterances():
    lengths = LENGTHS + [(9000, 5)]  # alone over the cap
    batches = make_batches(lengths, "numel", batch_bins=8000)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert _padded_bins(b, lengths) <= 8000 or len(b) == 1
        assert [lengths[i][0] for i in b] == sorted((lengths[i][0] for i in b), reverse=True)
    assert batches[-1] == [len(lengths) - 1]
    # ascending batch order, and batches are as full as the cap allows: the next utterance would not fit
    firsts = [lengths[b[0]][0] for b in batches]
    assert firsts == sorted(firsts)
    for b, nxt in zip(batches, batches[1:]):
        assert _padded_bins(b + [nxt[-1]], lengths) > 8000


@pytest.mark.parametrize("batch_type", ["sorted", "unsorted"])
def test_size_batches_cover_everything_at_most_batch_size(batch_type):
    batches = make_batches(LENGTHS, batch_type, batch_size=10)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert all(len(b) <= 10 for b in batches) and len(batches) == 21
    if batch_type == "unsorted":
        assert [i for b in batches for i in sorted(b)] == list(range(len(LENGTHS)))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_every_rank_gets_same_batch_count_and_every_utterance_once_per_epoch(world_size):
    batches = make_batches(LENGTHS, "numel", batch_bins=8000)
    orders = []
    for epoch in range(3):
        per_rank = _epoch(batches, world_size, epoch)
        assert len({len(r) for r in per_rank}) == 1
        seen = Counter(i for r in per_rank for b in r for i in b)
        assert sorted(seen) == list(range(len(LENGTHS))) and set(seen.values()) == {1}
        for r in per_rank:
            assert all(_padded_bins(b, LENGTHS) <= 8000 or len(b) == 1 for b in r)
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


def test_unshuffled_sampler_keeps_length_order_and_lightning_reaches_set_epoch():
    batches = make_batches(LENGTHS, "numel", batch_bins=8000)
    assert _epoch(batches, 2, 0, shuffle=False) == _epoch(batches, 2, 5, shuffle=False)
    assert [b for b in _epoch(batches, 1, 0, shuffle=False)[0]] == split_to_multiple(batches, 1)
    sampler = DistributedBatchSampler(batches, shuffle=True, seed=1)
    loader = torch.utils.data.DataLoader(range(len(LENGTHS)), batch_sampler=sampler)
    _set_sampler_epoch(loader, 4)
    assert sampler.sampler.epoch == 4
    assert pickle.loads(pickle.dumps(sampler)).sampler.epoch == 4


def test_numel_sorting_pads_less_than_random_batches():
    lengths = [s for s, _ in LENGTHS]
    sorted_batches = make_batches(LENGTHS, "sorted", batch_size=8)
    random_batches = make_batches(LENGTHS, "unsorted", batch_size=8)
    assert padding_fraction([[0, 1]], [3, 1]) == pytest.approx(2 / 6)
    assert padding_fraction(sorted_batches, lengths) < 0.2 * padding_fraction(random_batches, lengths)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    dirs = make_digits_dirs(root, num_train=24, num_valid=8)
    dirs["test"] = write_datadir(root / "test", [("t1", 1000, "ONE"), ("t2", 3000, "TWO THREE")])
    cfg = train_config(root, dirs)
    prepare_token_list(DataSpec.from_config(cfg["data"]))
    return cfg


def test_collated_batches_use_espnet2_padding_values(digits):
    ids, batch = next(iter(build_dataloader(digits, "test")))
    assert ids == ["t2", "t1"] and set(batch) == {"speech", "speech_lengths", "text", "text_lengths"}
    assert batch["speech"].dtype == torch.float32 and batch["text"].dtype == torch.int64
    assert batch["speech_lengths"].tolist() == [3000, 1000] and batch["text_lengths"].tolist() == [9, 3]
    assert torch.all(batch["speech"][1, 1000:] == 0.0) and batch["speech"][1, :1000].abs().max() > 0.1
    assert batch["text"][1, 3:].tolist() == [-1] * 6 and (batch["text"][0] >= 0).all()


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_loaders_share_batch_count_and_partition_the_split(digits, world_size):
    loaders = [build_dataloader(digits, "train", rank=r, world_size=world_size) for r in range(world_size)]
    for epoch in (0, 1):
        for loader in loaders:
            loader.batch_sampler.set_epoch(epoch)
        seen = [[u for ids, _ in loader for u in ids] for loader in loaders]
        assert len({len(loader) for loader in loaders}) == 1
        everything = [u for s in seen for u in s]
        assert sorted(everything) == sorted(f"tr{k:04d}" for k in range(24))


def test_loader_with_worker_processes_yields_the_same_batches(digits):
    cfg = {**digits, "dataloader": {**digits["dataloader"], "num_workers": 1}}
    with_workers = [ids for ids, _ in build_dataloader(cfg, "valid")]
    assert with_workers == [ids for ids, _ in build_dataloader(digits, "valid")]


def test_loader_spec_names_bad_keys():
    assert LoaderSpec.from_config({"batch_type": "sorted", "batch_size": 3}).batch_size == 3
    with pytest.raises(ValueError, match="unknown key.*`dataloader`: batch_bin"):
        LoaderSpec.from_config({"batch_bin": 3})
    with pytest.raises(ValueError, match="`dataloader.batch_type`.*numel, sorted, unsorted"):
        LoaderSpec.from_config({"batch_type": "bucket"})
    with pytest.raises(ValueError, match="`dataloader.batch_bins` must be a positive integer"):
        LoaderSpec.from_config({"batch_bins": 0})
