"""--stages pack: the zip alone, unpacked elsewhere by ESPnet2's own unpack, decodes with Speech2Text."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import torch
import yaml

from espnet3.data.preprocess import PreprocessSpec
from espnet3.data.tokenizer import TokenStream, prepare_token_list
from espnet3.export import save_model_pth, write_espnet2_config
from espnet3.stages.pack import pack
from espnet3.systems.base.inference import TrainedModel
from espnet3.utils.espnet2_imports import import_espnet2
from espnet3.utils.task_utils import build_task_model, task_args

N_MELS = 16


@pytest.fixture
def trained_run(tmp_path):
    """A finished run's files: config.yaml with a BPE model and global MVN statistics, an averaged model."""
    exp = tmp_path / "exp" / "tiny"
    words = ["one", "two", "three", "four", "five"]
    (tmp_path / "text").write_text("".join(f"u{i} {' '.join(words[i % 5:] + words[:i % 3])}\n" for i in range(30)))
    stream = TokenStream("token_list", exp / "tokens.txt", "bpe", exp / "bpe.model", tmp_path / "text", nbpe=20)
    prepare_token_list(stream)
    stats = exp / "stats" / "train" / "feats_stats.npz"
    stats.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(stats, count=np.array(100.0), sum=rng.standard_normal(N_MELS) * 100,
             sum_square=np.abs(rng.standard_normal(N_MELS)) * 1000 + 1000)
    model_block = {
        "token_list": str(stream.token_list),
        "frontend_conf": {"n_fft": 128, "hop_length": 64, "n_mels": N_MELS},
        "normalize": "global_mvn", "normalize_conf": {"stats_file": str(stats)},
        "encoder": "transformer",
        "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1},
        "decoder": "transformer", "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1},
        "model_conf": {"ctc_weight": 0.3},
    }
    args = task_args("asr1", model_block, None, {"token_type": "bpe", "bpemodel": str(stream.bpemodel)})
    torch.manual_seed(0)
    model = build_task_model("asr1", args)
    write_espnet2_config(PreprocessSpec(task="asr1", args=args), exp, seed=0)
    averaged = save_model_pth(model, exp / "valid.loss.ave_3best.pth")
    return exp, TrainedModel(exp / "config.yaml", averaged), stream, model.state_dict()


def test_packed_zip_has_espnet_model_zoo_layout_and_versions(trained_run):
    exp, model, stream, _ = trained_run
    packed = pack(model, ("asr_train_config", "asr_model_file"), exp, "tiny", [stream])
    assert packed == exp / "packed" / "tiny.zip"
    with zipfile.ZipFile(packed) as archive:
        names = set(archive.namelist())
        meta = yaml.safe_load(archive.read("meta.yaml"))
        config = yaml.safe_load(archive.read("exp/tiny/config.yaml"))
    assert names == {
        "meta.yaml", "exp/tiny/config.yaml", "exp/tiny/valid.loss.ave_3best.pth",
        "exp/tiny/stats/train/feats_stats.npz", "data/token_list/tokens.txt", "data/token_list/bpe.model",
    }
    assert meta["files"] == {"asr_model_file": "exp/tiny/valid.loss.ave_3best.pth"}
    assert meta["yaml_files"] == {"asr_train_config": "exp/tiny/config.yaml"}
    assert all(meta[package] for package in ("espnet", "espnet3", "torch", "lightning", "ray"))
    assert config["bpemodel"] == "data/token_list/bpe.model"
    assert config["normalize_conf"]["stats_file"] == "exp/tiny/stats/train/feats_stats.npz"


def test_the_unpacked_zip_alone_decodes_with_espnet2s_speech2text(trained_run, tmp_path):
    exp, model, stream, state = trained_run
    packed = pack(model, ("asr_train_config", "asr_model_file"), exp, "tiny", [stream])
    moved = tmp_path / "shared.zip"
    shutil.move(packed, moved)
    shutil.rmtree(tmp_path / "exp")  # nothing of the run is left but the zip
    unpack = import_espnet2("espnet2.main_funcs.pack_funcs").unpack
    kwargs = unpack(moved, tmp_path / "elsewhere")  # what Speech2Text.from_pretrained does
    assert set(kwargs) == {"asr_train_config", "asr_model_file"}
    Speech2Text = import_espnet2("espnet2.bin.asr_inference").Speech2Text
    speech2text = Speech2Text(**kwargs, device="cpu", beam_size=2, ctc_weight=0.3, nbest=1)
    loaded = speech2text.asr_model.state_dict()
    for name, value in state.items():  # Speech2Text casts the float64 MVN statistics to float32
        torch.testing.assert_close(loaded[name], value.to(loaded[name].dtype), rtol=0, atol=0, msg=name)
    assert speech2text.asr_model.normalize.stats_file.is_relative_to(tmp_path / "elsewhere")
    text, tokens, token_ids, _ = speech2text(np.random.default_rng(0).standard_normal(4000).astype(np.float32))[0]
    assert isinstance(text, str) and all(0 <= i < speech2text.asr_model.vocab_size for i in token_ids)


def test_packing_before_training_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the train stage first"):
        pack(TrainedModel(tmp_path / "config.yaml", tmp_path / "m.pth"), ("a", "b"), tmp_path, "x")
