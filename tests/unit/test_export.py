"""Exported models load in ESPnet2's own inference tools; checkpoint averaging is a mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from espnet3.config import load_config
from espnet3.export import average_checkpoints, load_model_state, save_model_pth, write_espnet2_config
from espnet3.utils.espnet2_imports import import_espnet2
from espnet3.data.preprocess import PreprocessSpec
from espnet3.utils.task_utils import build_model, task_args

TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]


@pytest.fixture
def tiny_asr_cfg(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(TOKENS) + "\n")
    path = tmp_path / "train.yaml"
    path.write_text(
        OmegaConf.to_yaml(
            {
                "task": "asr1",
                "exp_dir": str(tmp_path / "exp"),
                "model": {
                    "token_list": "${data.token_list}",
                    "frontend_conf": {"n_fft": 128, "hop_length": 64, "n_mels": 16},
                    "normalize": "none",
                    "encoder": "transformer",
                    "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1},
                    "decoder": "transformer",
                    "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1},
                    "model_conf": {"ctc_weight": 0.3},
                    "freeze_param": ["encoder.embed"],
                },
                "data": {"train": "a", "valid": "b", "token_list": str(tokens)},
            }
        )
    )
    return load_config(path)


def test_exported_model_decodes_with_espnet2_speech2text(tiny_asr_cfg, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_asr_cfg)
    exp_dir = tmp_path / "exp"
    args = task_args("asr1", tiny_asr_cfg.model, None, {"token_type": "char"})
    config_path = write_espnet2_config(PreprocessSpec(task="asr1", args=args), exp_dir, seed=0)
    model_path = save_model_pth(model, exp_dir / "valid.acc.ave_3best.pth")

    written = yaml.safe_load(config_path.read_text())
    assert written["token_list"] == TOKENS
    assert written["encoder"] == "transformer" and written["normalize"] is None
    assert written["token_type"] == "char" and written["bpemodel"] is None
    assert "freeze_param" not in written or written["freeze_param"] == []

    Speech2Text = import_espnet2("espnet2.bin.asr_inference").Speech2Text
    speech2text = Speech2Text(
        asr_train_config=config_path,
        asr_model_file=model_path,
        device="cpu",
        nbest=1,
        beam_size=2,
        ctc_weight=0.3,
    )
    for name, value in model.state_dict().items():
        assert torch.equal(speech2text.asr_model.state_dict()[name], value)
    results = speech2text(np.random.default_rng(0).standard_normal(4000).astype(np.float32))
    assert len(results) == 1
    text, tokens, token_ids, _hyp = results[0]
    assert all(0 <= i < len(TOKENS) for i in token_ids)


def test_espnet2_config_needs_a_task(tiny_asr_cfg, tmp_path):
    with pytest.raises(ValueError, match="needs `task`"):
        write_espnet2_config(PreprocessSpec(), tmp_path, seed=0)


def _tiny_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    net.train()
    for _ in range(seed + 1):
        net(torch.randn(5, 3))  # moves running stats and num_batches_tracked
    return net


def test_averaging_a_lightning_checkpoint_and_a_pth_gives_their_mean(tmp_path):
    first, second = _tiny_net(1), _tiny_net(2)
    ckpt = tmp_path / "epoch=1.ckpt"
    torch.save(
        {
            "epoch": 1,
            "state_dict": {f"model.{k}": v for k, v in first.state_dict().items()},
            "optimizer_states": [],
        },
        ckpt,
    )
    pth = save_model_pth(second, tmp_path / "epoch2.pth")

    out = average_checkpoints([ckpt, pth], tmp_path / "ave" / "valid.loss.ave_2best.pth")
    averaged = torch.load(out)
    assert set(averaged) == set(first.state_dict())
    for key, value in first.state_dict().items():
        if key.endswith("num_batches_tracked"):
            assert averaged[key] == second.state_dict()[key] == 3  # the last one's counter
        else:
            torch.testing.assert_close(averaged[key], (value + second.state_dict()[key]) / 2)


def test_lightning_checkpoint_weights_lose_the_model_prefix(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"model.w": torch.ones(2), "loss_scaler": torch.zeros(1)}}, ckpt)
    assert list(load_model_state(ckpt)) == ["w"]


def test_checkpoints_of_different_models_are_not_averaged(tmp_path):
    a = save_model_pth(torch.nn.Linear(2, 2), tmp_path / "a.pth")
    b = save_model_pth(torch.nn.Linear(2, 2, bias=False), tmp_path / "b.pth")
    with pytest.raises(ValueError, match="different parameters"):
        average_checkpoints([a, b], tmp_path / "out.pth")
