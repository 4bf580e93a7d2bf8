"""model.init (ESPnet2's --init) is applied to task models on the path Ray workers take."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from data_utils import make_digits_dirs, train_config
from espnet3.data.plan import build_data_plan
from espnet3.utils.espnet2_imports import import_espnet2
from espnet3.utils.task_utils import build_model

MODEL = {
    "token_list": "${data.token_list}",
    "frontend_conf": {"n_fft": 128, "hop_length": 64, "n_mels": 16},
    "normalize": None,
    "encoder": "transformer",
    "encoder_conf": {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 1},
    "decoder": "transformer",
    "decoder_conf": {"attention_heads": 2, "linear_units": 64, "num_blocks": 1},
}


def _built(tmp_path, init):
    """The model a Ray worker builds: from the data plan's ESPnet2 args, seeded as the worker seeds."""
    cfg = OmegaConf.create({**train_config(tmp_path, make_digits_dirs(tmp_path / "data")), "task": "asr1",
                            "model": {**MODEL, "init": init}})
    plan = build_data_plan(OmegaConf.to_container(cfg, resolve=True))
    torch.manual_seed(0)
    return build_model(cfg, plan=plan)


def test_xavier_uniform_init_is_applied_to_the_task_model(tmp_path):
    model = _built(tmp_path, "xavier_uniform")
    default = _built(tmp_path, None)
    initialize = import_espnet2("espnet2.torch_utils.initialize").initialize
    initialize(default, "xavier_uniform")  # the default model, re-initialised as ESPnet2 documents it
    for (name, param), expected in zip(model.named_parameters(), default.parameters()):
        assert torch.equal(param, expected), name

    weight = model.encoder.encoders[0].feed_forward.w_1.weight  # Linear 32 -> 64
    fan_out, fan_in = weight.shape
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert weight.abs().max() <= bound
    assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)  # uniform(-a, a): std a/sqrt(3)
    assert all(p.abs().sum() == 0 for n, p in model.named_parameters() if n.endswith(".bias") and p.dim() == 1)


def test_without_init_the_model_keeps_pytorchs_default_initialisation(tmp_path):
    model = _built(tmp_path, None)
    weight = model.encoder.encoders[0].feed_forward.w_1.weight
    assert weight.abs().max() <= 1 / math.sqrt(weight.shape[1])  # nn.Linear's kaiming_uniform(a=sqrt(5)) bound
    assert model.encoder.encoders[0].feed_forward.w_1.bias.abs().sum() > 0
