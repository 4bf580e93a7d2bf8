"""Sharded corpora: the converter, the streaming reader, the epoch plan and its exact resume.

Without a cluster: a converted split must give ESPnet2's own values; every epoch must hold every
utterance once on every world size and DataLoader worker count, with the same number of batches
on every rank; a DataLoader worker must read its shards front to back; a resumed epoch must yield
exactly the batches not yet trained. The end-to-end run from shards in a bucket is in
test_object_storage.py.
"""

from collections import Counter

import numpy as np
import pytest

from data_utils import resume_in_another_group
from espnet3 import launch
from espnet3.data.dataset import build_dataset, dataset_keys
from espnet3.errors import DataError
from espnet3.data.loader import LoaderSpec
from espnet3.data.shard import convert, main as shard_main
from espnet3.data.shard_format import MANIFEST, ShardManifest, ShardReader, is_shard_dir
from espnet3.data.shard_sampler import ShardBatchSampler, epoch_plan
from espnet3.data.sources import SplitSource
from paths import TINY



@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from espnet3.corpora.digits import generate_corpus

    root = tmp_path_factory.mktemp("digits")
    generate_corpus(root, num_train=40, num_valid=8, num_test=8, seed=1, verbose=False)
    return root


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "train"
    convert(str(corpus / "train"), str(out), utterances_per_shard=7)
    return out


def test_a_converted_split_gives_espnet2s_own_values_and_copies_its_lists(corpus, shards):
    plain = build_dataset(SplitSource.parse("data.train", str(corpus / "train")), None)
    source = SplitSource.parse("data.train", str(shards)).resolved()
    assert source.shards == shards and source.names == ("speech", "text")
    sharded = build_dataset(source, None)
    assert dataset_keys(sharded) == dataset_keys(plain)
    for key in dataset_keys(plain):
        expected = plain.loader_dict["speech"][key]
        got = sharded.loader_dict["speech"][key]
        assert got.dtype == expected.dtype and np.array_equal(got, expected)
        assert sharded.loader_dict["text"][key] == plain.loader_dict["text"][key]
    assert sharded.reader.opened == 6  # 40 utterances, 7 per shard: each shard read once, in order
    for name in ("text", "utt2spk", "spk2utt"):
        assert (shards / name).read_text() == (corpus / "train" / name).read_text()
    assert not (shards / "wav.scp").exists() and not (shards / "wav").exists()


def test_a_directory_without_its_manifest_is_not_a_shard_directory(shards, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for path in shards.glob("shard-*.tar"):
        (partial / path.name).write_bytes(path.read_bytes())
    assert is_shard_dir(shards) and not is_shard_dir(partial)
    (partial / MANIFEST).write_text('{"format": "something-else"}')
    with pytest.raises(DataError, match=r"`data.train`: .*shards.json is not a shard manifest.*espnet3.data.shard"):
        SplitSource.parse("data.train", str(partial)).resolved()


def test_the_reader_serves_any_order_and_reopens_only_behind_its_stream(shards):
    manifest = ShardManifest.load(shards)
    reader = ShardReader(manifest, buffer_items=100)
    keys = manifest.keys
    first = manifest.shards[0].keys
    assert list(reader.item(first[3])) == ["speech"] and reader.opened == 1
    for key in first[:3]:  # passed over on the way to first[3]: served from the buffer
        reader.item(key)
    assert reader.opened == 1
    reader.item(first[0])  # behind the stream and no longer buffered: the shard is opened again
    assert reader.opened == 2
    order = list(np.random.default_rng(0).permutation(keys))
    values = {k: reader.item(k)["speech"] for k in order}
    again = ShardReader(manifest)
    assert all(np.array_equal(values[k], again.item(k)["speech"]) for k in keys)


LOADER = LoaderSpec(batch_bins=60000, shuffle_buffer=10)


@pytest.mark.parametrize("world_size,num_workers", [(1, 0), (2, 0), (2, 2), (3, 1), (4, 2), (8, 2)])
def test_every_epoch_holds_every_utterance_once_with_equal_steps(shards, world_size, num_workers):
    manifest = ShardManifest.load(shards)
    for epoch in (0, 1):
        plan = epoch_plan(manifest, LOADER, world_size=world_size, num_workers=num_workers, shuffle=True, seed=3,
                          epoch=epoch)
        assert len({len(p) for p in plan}) == 1  # every rank takes the same number of steps
        seen = Counter(k for rank in plan for batch in rank for k in batch)
        assert set(seen) == set(manifest.keys)
        if world_size * max(1, num_workers) <= len(manifest.shards):
            assert max(seen.values()) == 1  # nothing repeated while there is a piece per worker
    a = epoch_plan(manifest, LOADER, world_size=2, num_workers=2, shuffle=True, seed=3, epoch=1)
    assert a == epoch_plan(manifest, LOADER, world_size=2, num_workers=2, shuffle=True, seed=3, epoch=1)
    assert a != epoch_plan(manifest, LOADER, world_size=2, num_workers=2, shuffle=True, seed=3, epoch=2)
    assert a != epoch_plan(manifest, LOADER, world_size=2, num_workers=2, shuffle=True, seed=4, epoch=1)


def test_each_dataloader_worker_reads_only_its_own_shards(shards):
    """Batch i goes to DataLoader worker i % num_workers: the shards behind one worker's batches
    are disjoint from the other's, so no shard is streamed twice in an epoch."""
    manifest = ShardManifest.load(shards)
    shard_of = {k: i for i, s in enumerate(manifest.shards) for k in s.keys}
    plan = epoch_plan(manifest, LOADER, world_size=1, num_workers=2, shuffle=True, seed=0, epoch=0)[0]
    touched = [{shard_of[k] for batch in plan[w::2] for k in batch} for w in range(2)]
    assert touched[0] and touched[1] and not touched[0] & touched[1]
    bins = {k: s[0] for s in manifest.shards for k, s in zip(s.keys, s.shapes["speech"])}
    for batch in plan:  # ESPnet2's numel rule: over batch_bins only by the (longest) utterance that closed it
        rest = sorted(bins[k] for k in batch)[:-1]
        assert not rest or len(rest) * rest[-1] <= LOADER.batch_bins


def test_a_resumed_epoch_yields_exactly_the_batches_not_yet_trained(shards):
    manifest = ShardManifest.load(shards)
    full = []
    for rank in range(2):
        sampler = ShardBatchSampler(manifest, LOADER, rank=rank, world_size=2, shuffle=True, seed=5)
        sampler.set_epoch(3)
        full.append(list(sampler))
    done = 2
    state = ShardBatchSampler(manifest, LOADER, rank=0, world_size=2, shuffle=True, seed=5)
    state.set_epoch(3)
    progress = state.progress(done)
    for rank in range(2):
        resumed = ShardBatchSampler(manifest, LOADER, rank=rank, world_size=2, shuffle=True, seed=5)
        resumed.resume(progress)
        assert list(resumed) == full[rank][done:]
        resumed.set_epoch(4)  # the next epoch is whole again
        fresh = ShardBatchSampler(manifest, LOADER, rank=rank, world_size=2, shuffle=True, seed=5)
        fresh.set_epoch(4)
        assert list(resumed) == list(fresh)
    seen = Counter(k for rank in full for b in rank[:done] for k in b)
    seen.update(k for rank in full for b in rank[done:] for k in b)
    assert set(seen) == set(manifest.keys) and max(seen.values()) == 1


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 3)])
def test_an_epoch_resumed_with_another_number_of_workers_trains_every_utterance_once(shards, before, after):
    manifest = ShardManifest.load(shards)
    old = [ShardBatchSampler(manifest, LOADER, rank=r, world_size=before, num_workers=2, shuffle=True, seed=5)
           for r in range(before)]
    new = [ShardBatchSampler(manifest, LOADER, rank=r, world_size=after, num_workers=1, shuffle=True, seed=5)
           for r in range(after)]
    seen, _ = resume_in_another_group(old, new, epoch=1, done=2)
    assert sorted(seen) == sorted(manifest.keys) and max(seen.values()) == 1


def test_the_converter_refuses_bad_sources_with_exit_2(corpus, shards, tmp_path, capsys):
    assert shard_main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert shard_main([str(shards), str(tmp_path / "out")]) == 2
    assert "already a shard directory" in capsys.readouterr().err


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for an input that should have failed before")

    monkeypatch.setattr("ray.init", refuse)


def _launch(corpus, train, *overrides):
    return launch.main(["--config", str(TINY), "--num-gpus", "0", "~data.digits", f"data.train={train}",
                        f"data.valid={corpus}/valid", f"data.test.test={corpus}/test", *overrides])


def test_a_missing_shard_is_named_before_ray(corpus, shards, tmp_path, capsys, no_ray):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in shards.iterdir():
        if path.name != "shard-000002.tar":
            (broken / path.name).write_bytes(path.read_bytes())
    assert _launch(corpus, broken, f"exp_dir={tmp_path}/exp") == 2
    err = capsys.readouterr().err
    assert "`data.train`" in err and f"{broken}/shard-000002.tar" in err and "does not exist" in err
    assert "convert the data again" in err and "Traceback" not in err


def test_category_batches_are_refused_for_sharded_data_before_ray(corpus, shards, tmp_path, capsys, no_ray):
    assert _launch(corpus, shards, f"exp_dir={tmp_path}/exp", "dataloader.batch_type=catbel") == 2
    err = capsys.readouterr().err
    assert "`dataloader.batch_type: catbel`" in err and "sharded split" in err and "numel" in err
