"""The data plan: every split form, the task's preprocessor, required names, shapes and their cache."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile
import torch

from data_utils import TINY_ASR_MODEL, digit_utterances, make_digits_dirs, sine, train_config, write_datadir
from espnet3.errors import DataError
from espnet3.data.plan import build_data_plan
from espnet3.data import shapes as shapes_module
from espnet3.utils.task_utils import build_task_model, check_task_blocks


def _asr_config(root, dirs, **extra):
    cfg = {**train_config(root, {"train": "-", "valid": "-"}), "task": "asr1", "model": dict(TINY_ASR_MODEL), **extra}
    cfg["data"].update(train=dirs["train"], valid=dirs["valid"])
    cfg["data"].update(test={k: v for k, v in dirs.items() if k not in ("train", "valid")})
    return cfg


def _flac_dump_dir(root):
    """An ESPnet2 dump/raw directory: FLAC audio, wav.scp, text, utt2spk."""
    root.mkdir(parents=True)
    wav, text, spk = [], [], []
    for k, (utt, n, words) in enumerate(digit_utterances(16, seed=5, prefix="d")):
        path = root / f"{utt}.flac"
        soundfile.write(str(path), sine(n, 220 + 30 * k), 16000, format="FLAC", subtype="PCM_16")
        wav.append(f"{utt} {path}\n")
        text.append(f"{utt} {words}\n")
        spk.append(f"{utt} s{k % 3}\n")
    (root / "wav.scp").write_text("".join(wav))
    (root / "text").write_text("".join(text))
    (root / "utt2spk").write_text("".join(spk))
    return root


def test_an_espnet2_dump_dir_as_triples_trains_exactly_like_the_shorthand(tmp_path):
    dump = _flac_dump_dir(tmp_path / "dump" / "raw" / "train")
    triples = [[str(dump / "wav.scp"), "speech", "sound"], [str(dump / "text"), "text", "text"]]
    results = []
    for name, source in (("shorthand", str(dump)), ("triples", triples)):
        root = tmp_path / name
        cfg = _asr_config(root, {"train": source, "valid": source})
        plan = build_data_plan(cfg)
        batches = [(ids, {k: v.clone() for k, v in b.items()}) for ids, b in plan.dataloader("train")]
        torch.manual_seed(0)
        model = build_task_model("asr1", plan.preprocess.args)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _, batch in batches[:2]:
            loss, _, _ = model(**batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        results.append((batches, [p.detach().clone() for p in model.parameters()]))
    (batches_a, params_a), (batches_b, params_b) = results
    assert [ids for ids, _ in batches_a] == [ids for ids, _ in batches_b]
    for (_, a), (_, b) in zip(batches_a, batches_b):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))


@pytest.mark.parametrize("target", ["toy_datasets.PairDataset", "toy_datasets.DictDataset"])
def test_a_target_dataset_needs_no_adapter(tmp_path, target):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\nO\nN\nE\nT\nW\nH\nR\n<space>\n<sos/eos>\n")
    source = {"_target_": target, "num_utts": 10}
    cfg = _asr_config(tmp_path, {"train": source, "valid": {**source, "seed": 1}})
    cfg["data"]["token_list"] = str(tokens)
    plan = build_data_plan(cfg)
    assert plan.shapes("train").names == ("speech", "text")
    ids, batch = next(iter(plan.dataloader("train")))
    expected_ids = [f"pair{k:02d}" for k in range(10)] if target.endswith("PairDataset") else [str(k) for k in range(10)]
    assert set(ids) <= set(expected_ids)
    assert batch["text"].dtype == torch.int64 and batch["speech"].dtype == torch.float32
    assert (batch["text"][0][: int(batch["text_lengths"][0])] >= 2).all()  # tokenized by ASR's preprocessor


def test_the_task_preprocessor_applies_its_espnet2_options(tmp_path):
    dirs = make_digits_dirs(tmp_path, num_train=6, num_valid=2)
    plan = build_data_plan(_asr_config(tmp_path, dirs, preprocessor={"speech_volume_normalize": 0.5}))
    _, item = plan.dataset("train")["tr0000"]
    assert np.abs(item["speech"]).max() == pytest.approx(0.5)


def test_a_target_preprocessor_replaces_the_tasks(tmp_path):
    dirs = make_digits_dirs(tmp_path, num_train=6, num_valid=2)
    plain = build_data_plan(_asr_config(tmp_path / "a", dirs))
    louder = build_data_plan(_asr_config(tmp_path / "b", dirs, preprocessor={"_target_": "toy_datasets.Louder",
                                                                              "gain": 3.0}))
    _, a = plain.dataset("train")["tr0000"]
    _, b = louder.dataset("train")["tr0000"]
    np.testing.assert_allclose(b["speech"], 3.0 * a["speech"], rtol=1e-6)
    assert b["text"].tolist() == [1, 2, 3]


def test_preprocessing_options_are_checked_against_the_task():
    with pytest.raises(ValueError, match=r"`preprocessor.cleanr` is not a preprocessing option.*"
                                         r"Did you mean `preprocessor.cleaner`"):
        check_task_blocks("asr1", {}, {"cleanr": "tacotron"})
    with pytest.raises(ValueError, match=r"`model.cleaner` is a preprocessing option.*move it to the "
                                         r"`preprocessor:` block"):
        check_task_blocks("asr1", {"cleaner": "tacotron"}, None)
    with pytest.raises(ValueError, match=r"`model.token_list`.*and `preprocessor.token_list`.*differ"):
        check_task_blocks("asr1", {"token_list": "a.txt"}, {"token_list": "b.txt"})


def test_a_split_without_a_required_data_name_is_named_with_the_key_to_add(tmp_path):
    dirs = make_digits_dirs(tmp_path, num_train=6, num_valid=2)
    valid = [[str(dirs["valid"] / "wav.scp"), "speech", "sound"]]
    with pytest.raises(DataError, match=r"`data.valid` lacks the data text that task `asr1` requires.*"
                                        r"add a triple such as \[<dir>/text.scp, text, <type>\] to `data.valid`"):
        build_data_plan(_asr_config(tmp_path, {**dirs, "valid": valid}))


def test_shapes_are_recomputed_when_the_data_changes(tmp_path):
    dirs = make_digits_dirs(tmp_path, num_train=6, num_valid=2)
    cfg = _asr_config(tmp_path, dirs)
    plan = build_data_plan(cfg)
    text_shape = plan.stats_dir / "train" / "text_shape"
    plan.shapes("train")
    assert re.search(r"^tr0000 \d+$", text_shape.read_text(), re.M)
    lines = (dirs["train"] / "text").read_text().splitlines()
    lines[0] = "tr0000 ONE"
    (dirs["train"] / "text").write_text("\n".join(lines) + "\n")
    build_data_plan(cfg).shapes("train")
    assert "tr0000 3\n" in text_shape.read_text()


def test_large_splits_are_measured_by_ray_tasks_with_the_same_result(tmp_path, ray_cluster, monkeypatch):
    dirs = {"train": write_datadir(tmp_path / "train", digit_utterances(30, seed=3, prefix="u")),
            "valid": write_datadir(tmp_path / "valid", digit_utterances(4, seed=4, prefix="v"))}
    serial = build_data_plan(_asr_config(tmp_path / "serial", dirs))
    serial.shapes("train")
    monkeypatch.setattr(shapes_module, "UTTERANCES_PER_SHARD", 10)
    parallel = build_data_plan(_asr_config(tmp_path / "parallel", dirs))
    assert parallel.shapes("train", defer_large=True) is None  # left for Ray: too large for one process
    parallel.shapes("train", parallel=True, log=True)
    for name in ("speech_shape", "text_shape"):
        assert (parallel.stats_dir / "train" / name).read_text() == (serial.stats_dir / "train" / name).read_text()


@pytest.mark.parametrize("args, rate", [
    ({"frontend": "default", "frontend_conf": {}}, 16000), ({"frontend_conf": {"fs": 8000}}, 8000),
    ({"fs": "22.05k"}, 22050), ({"fs": 24000}, 24000), ({}, None),
], ids=["asr-default-frontend", "frontend-fs", "tts-fs-string", "fs", "text-task"])
def test_the_audio_rate_of_speech_units_is_what_espnet2s_args_give(args, rate):
    from espnet3.data.preprocess import PreprocessSpec

    assert PreprocessSpec(task="asr1", args=args).sample_rate() == rate
