import argparse
import copy
import sys
from unittest import mock

import numpy as np
import pytest
import torch

from data_utils import make_digits_dirs, train_config
from espnet3.data.plan import build_data_plan
from espnet3.stages.collect_stats import collect_stats
from espnet3.utils.espnet2_imports import import_espnet2

ray = pytest.importorskip("ray")


def tiny_asr_model(model_cfg: dict) -> torch.nn.Module:
    """A ~20k-parameter ESPnet2 ASR model from a train.yaml ``model:`` block (module level: picklable)."""
    asr_task = import_espnet2("espnet2.tasks.asr").ASRTask
    with mock.patch.object(sys, "argv", ["x"]):
        args = asr_task.get_default_config()
    args.update(model_cfg)
    return asr_task.build_model(argparse.Namespace(**args))


def not_an_asr_model(model_cfg: dict) -> torch.nn.Module:
    return torch.nn.Linear(2, 2)


# Ray workers cannot import test modules (tests/ is not a package on their path): ship the
# factories above by value instead.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    cfg = train_config(root, make_digits_dirs(root, num_train=24, num_valid=8), batch_bins=30000)
    cfg["model"] = {
        "token_list": cfg["data"]["token_list"],
        "input_size": None,
        "frontend": "default",
        "frontend_conf": {"n_fft": 128, "n_mels": 20, "hop_length": 64},
        "specaug": None,
        "normalize": "global_mvn",
        "normalize_conf": {"stats_file": str(root / "stats" / "train" / "feats_stats.npz")},
        "encoder": "transformer",
        "encoder_conf": {"output_size": 16, "num_blocks": 1, "linear_units": 32, "attention_heads": 2},
        "decoder": None,
        "model_conf": {"ctc_weight": 1.0},
    }
    cfg["task"] = "asr1"
    return cfg


@pytest.fixture(scope="module")
def plan(cfg):
    return build_data_plan(cfg)


def _load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def serial_stats(cfg, plan, tmp_path_factory):
    out = collect_stats(tiny_asr_model, cfg["model"], plan.with_stats_dir(tmp_path_factory.mktemp("serial")), num_shards=1)
    return out


def test_writes_espnet2_stats_files_and_leaves_config_untouched(cfg, serial_stats):
    for split, n in (("train", 24), ("valid", 8)):
        d = serial_stats / split
        assert (d / "stats_keys").read_text().split() == ["feats", "feats_lengths"]
        assert (d / "batch_keys").read_text().split() == ["speech", "text"]
        stats = _load(d / "feats_stats.npz")
        assert set(stats) == {"count", "sum", "sum_square"}
        assert stats["sum"].shape == (20,) and stats["sum"].dtype == np.float64
        shapes = [line.split() for line in (d / "feats_shape").read_text().splitlines()]
        assert len(shapes) == n and all(s[1].endswith(",20") for s in shapes)
        # count = all valid frames, i.e. the sum of the per-utterance feature lengths, padding excluded
        assert int(stats["count"]) == sum(int(s[1].split(",")[0]) for s in shapes)
        assert int(_load(d / "feats_lengths_stats.npz")["sum"]) == int(stats["count"])
        speech = dict(line.split() for line in (d / "speech_shape").read_text().splitlines())
        assert len(speech) == n
    assert cfg["model"]["normalize"] == "global_mvn" and "normalize_conf" in cfg["model"]


def test_sharded_ray_run_equals_single_process_run(cfg, plan, serial_stats, ray_cluster, tmp_path, capsys):
    before = copy.deepcopy(cfg)
    out = collect_stats(tiny_asr_model, cfg["model"], plan.with_stats_dir(tmp_path), num_shards=2)
    assert "collect_stats [train]: 2/2 shards, 24/24 utterances" in capsys.readouterr().out
    for split in ("train", "valid"):
        a, b = _load(out / split / "feats_stats.npz"), _load(serial_stats / split / "feats_stats.npz")
        assert int(a["count"]) == int(b["count"])
        np.testing.assert_allclose(a["sum"], b["sum"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(a["sum_square"], b["sum_square"], rtol=1e-12, atol=0)
        assert (out / split / "feats_shape").read_text() == (serial_stats / split / "feats_shape").read_text()
    assert cfg == before
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
        "collect_train_0.log", "collect_train_1.log", "collect_valid_0.log", "collect_valid_1.log"]


def test_global_mvn_from_written_stats_matches_numpy_over_all_frames(cfg, plan, serial_stats):
    model = tiny_asr_model({**cfg["model"], "normalize": None, "normalize_conf": {}}).eval()
    frames = []
    with torch.no_grad():
        for _, batch in plan.with_stats_dir(serial_stats).dataloader("train"):
            out = model.collect_feats(**batch)
            frames += [f[:n].double().numpy() for f, n in zip(out["feats"], out["feats_lengths"])]
    frames = np.concatenate(frames)
    stats_file = serial_stats / "train" / "feats_stats.npz"
    mvn = import_espnet2("espnet2.layers.global_mvn").GlobalMVN(stats_file)
    np.testing.assert_allclose(mvn.mean.numpy(), frames.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mvn.std.numpy(), frames.std(0), rtol=1e-5, atol=1e-6)
    # and the train stage can now build the configured model against those stats
    built = tiny_asr_model({**cfg["model"], "normalize_conf": {"stats_file": str(stats_file)}})
    assert type(built.normalize).__name__ == "GlobalMVN"
    torch.testing.assert_close(built.normalize.mean, mvn.mean)


@pytest.mark.parametrize("num_shards", [1, 2])
def test_model_without_collect_feats_is_a_type_error_naming_the_class(cfg, plan, tmp_path, ray_cluster, num_shards):
    with pytest.raises(TypeError, match=r"torch\.nn\.modules\.linear\.Linear has no collect_feats"):
        collect_stats(not_an_asr_model, cfg["model"], plan.with_stats_dir(tmp_path), num_shards=num_shards)
