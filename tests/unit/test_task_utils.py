"""Model construction: recipe names, ESPnet2 model blocks, and `_target_` models."""

from __future__ import annotations

import copy
import sys
import textwrap

import pytest
import torch
from omegaconf import OmegaConf

from espnet3.config import load_config
from espnet3.systems.tasks import TASKS
from espnet3.utils.code_dir import config_code_dir
from espnet3.utils.espnet2_imports import import_espnet2
from espnet3.utils.task_utils import (
    build_model,
    get_espnet_model,
    resolve_task,
    task_args,
)

TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]
TINY_BLOCK = {
    "token_list": TOKENS,
    "frontend_conf": {"n_fft": 128, "hop_length": 64, "n_mels": 16},
    "encoder": "transformer",
    "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1},
    "decoder": "transformer",
    "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1},
}
RECIPES = (
    "asr1 asr2 asvspoof1 cls1 codec1 diar1 enh1 enh_asr1 enh_diar1 enh_st1 gan_tts hubert1 lid1 lm1 mt1 "
    "s2st1 s2t1 sds1 slu1 speechlm1 spk1 ssl1 st1 svs1 svs2 tts1 tts2 uasr1"
).split()


@pytest.fixture(scope="module")
def espnet2_asr_task():
    return import_espnet2("espnet2.tasks.asr").ASRTask


def test_every_recipe_name_maps_to_its_espnet2_task():
    assert sorted(TASKS) == sorted(RECIPES)
    assert TASKS["asr1"] == "espnet2.tasks.asr.ASRTask"
    assert TASKS["asr2"] == "espnet2.tasks.asr2.ASR2Task"
    assert TASKS["tts1"] == "espnet2.tasks.tts.TTSTask"
    assert TASKS["enh_asr1"] == "espnet2.tasks.enh_s2t.EnhS2TTask"
    assert TASKS["ssl1"] == "espnet2.tasks.ssl.SSLTask"
    assert TASKS["hubert1"] == "espnet2.tasks.hubert.HubertTask"


def test_recipe_name_and_dotted_paths_resolve_to_the_same_task(espnet2_asr_task):
    assert resolve_task("asr1") is espnet2_asr_task
    assert resolve_task("espnet2.tasks.asr.ASRTask") is espnet2_asr_task
    assert issubclass(resolve_task("espnet3.systems.asr.task.ASRTask"), espnet2_asr_task)


def test_unknown_recipe_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"did you mean `enh_asr1`\?") as err:
        resolve_task("enh_asr")
    assert "tts1" in str(err.value) and "uasr1" in str(err.value)


def test_task_whose_module_is_missing_is_a_value_error_not_an_import_error():
    with pytest.raises(ValueError, match=r"espnet2\.tasks\.asr2 cannot be imported here"):
        resolve_task("asr2")


def test_non_task_class_is_a_type_error():
    with pytest.raises(TypeError, match="not an ESPnet2 task"):
        resolve_task("collections.OrderedDict")


def test_model_block_builds_the_espnet2_model_without_touching_the_callers_block(monkeypatch):
    # ESPnet2's get_default_config parses sys.argv; foreign flags must not reach it.
    monkeypatch.setattr(sys, "argv", ["pytest", "--some-pytest-flag", "-q"])
    block = {**copy.deepcopy(TINY_BLOCK), "freeze_param": ["encoder.embed"], "normalize": "None"}
    before = copy.deepcopy(block)
    model = get_espnet_model("asr1", block)
    assert type(model).__name__ == "ESPnetASRModel"
    assert model.token_list == TOKENS
    assert model.normalize is None
    assert model.encoder.output_size() == 16
    assert block == before


def test_token_list_may_be_a_file_with_one_token_per_line(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(TOKENS) + "\n")
    args = task_args("asr1", {**TINY_BLOCK, "token_list": str(tokens)})
    assert args["token_list"] == TOKENS


def test_missing_token_list_file_says_which_stage_writes_it(tmp_path):
    with pytest.raises(ValueError, match=r"`model.token_list` is .*not a file.*data.token_list"):
        task_args("asr1", {**TINY_BLOCK, "token_list": str(tmp_path / "nope.txt")})


def test_unknown_model_key_lists_valid_keys_and_suggests_the_closest():
    with pytest.raises(ValueError) as err:
        task_args("asr1", {**TINY_BLOCK, "encodr_conf": {}})
    message = str(err.value)
    assert "`model.encodr_conf` is not a model option of espnet2.tasks.asr.ASRTask" in message
    assert "Did you mean `model.encoder_conf`?" in message
    assert "specaug_conf" in message


def test_picking_a_class_without_its_conf_does_not_inherit_the_default_class_kwargs():
    # ASR's default encoder is rnn; its kwargs (rnn_type, ...) would break a conformer.
    block = {k: v for k, v in TINY_BLOCK.items() if k != "encoder_conf"}
    args = task_args("asr1", {**block, "encoder": "conformer"})
    assert args["encoder_conf"] == {}


def test_dictconfig_block_is_resolved_against_the_whole_config(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(TOKENS) + "\n")
    cfg = OmegaConf.create({"data": {"token_list": str(tokens)}, "model": dict(TINY_BLOCK)})
    cfg.model.token_list = "${data.token_list}"
    args = task_args("asr1", cfg.model)
    assert args["token_list"] == TOKENS
    assert OmegaConf.is_interpolation(cfg.model, "token_list")


def test_build_model_dispatches_on_task(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(TOKENS) + "\n")
    path = tmp_path / "train.yaml"
    path.write_text(
        OmegaConf.to_yaml(
            {
                "task": "espnet3.systems.asr.task.ASRTask",
                "model": {**TINY_BLOCK, "token_list": "${data.token_list}", "freeze_param": []},
                "data": {"train": "a", "valid": "b", "token_list": str(tokens)},
            }
        )
    )
    model = build_model(load_config(path))
    assert model.vocab_size == len(TOKENS)


def test_target_model_from_the_recipe_directory_is_importable(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "__init__.py").write_text("")
    (tmp_path / "src" / "my_model.py").write_text(
        textwrap.dedent(
            """
            import torch

            class MyModel(torch.nn.Module):
                def __init__(self, hidden, layers):
                    super().__init__()
                    assert isinstance(layers, list)
                    self.net = torch.nn.Linear(hidden, hidden)
            """
        )
    )
    path = tmp_path / "train.yaml"
    path.write_text(
        "model: {_target_: src.my_model.MyModel, hidden: 3, layers: [1], freeze_param: [net]}\n"
        "data: {train: a, valid: b}\n"
    )
    cfg = load_config(path)
    assert config_code_dir(path) == tmp_path.resolve()
    model = build_model(cfg, config_code_dir(path))
    assert isinstance(model, torch.nn.Module) and model.net.in_features == 3
    assert sys.path[0] == str(tmp_path.resolve())


def test_recipe_code_names_the_package_a_target_model_lives_in(tmp_path):
    from omegaconf import OmegaConf

    from espnet3.utils.code_dir import recipe_code

    (tmp_path / "src").mkdir()
    target = OmegaConf.create({"task": None, "model": {"_target_": "src.my_model.MyModel"}})
    assert recipe_code(target, tmp_path) == [tmp_path / "src"]
    assert recipe_code(OmegaConf.create({"task": None, "model": {"_target_": "torch.nn.Linear"}}), tmp_path) == []
    assert recipe_code(OmegaConf.create({"task": "asr1", "model": {}}), tmp_path) == []
