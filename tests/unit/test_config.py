"""train.yaml loading: defaults, overrides, validation errors, saving without secrets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from espnet3.config import ConfigError, load_config, save_config
from paths import TINY

MINIMAL = """
task: asr1
model:
  token_list: ${data.token_list}
  encoder: transformer
data:
  train: data/train
  valid: data/valid
"""


def write(tmp_path: Path, text: str, name: str = "train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def with_extra(extra: str) -> str:
    return textwrap.dedent(MINIMAL) + textwrap.dedent(extra)


def test_minimal_config_gets_documented_defaults_and_name_from_file_stem(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL, "digits_asr.yaml"))
    assert cfg.name == "digits_asr"
    assert cfg.exp_dir == "exp/digits_asr"
    assert cfg.stats_dir == "exp/digits_asr/stats"
    assert cfg.model.token_list == "exp/digits_asr/tokens.txt"
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert cfg.trainer.max_epochs == 10
    assert cfg.best_model_criterion == [["valid/loss", 3, "min"]]
    assert cfg.dataloader.batch_type == "numel"


def test_unknown_top_level_key_suggests_the_closest_valid_key(tmp_path):
    path = write(tmp_path, with_extra("optimiser: {_target_: torch.optim.SGD}\n"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "optimiser" in message and "did you mean `optimizer`" in message
    assert str(path) in message


def test_missing_required_key_names_key_file_and_fix(tmp_path):
    path = write(tmp_path, "task: asr1\nmodel: {}\ndata: {train: data/train}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "data.valid"
    assert str(path) in str(err.value)
    assert "data.valid=VALUE" in str(err.value)


def test_missing_required_key_can_come_from_an_override(tmp_path):
    path = write(tmp_path, "task: asr1\nmodel: {}\ndata: {train: data/train}\n")
    assert load_config(path, ["data.valid=data/dev"]).data.valid == "data/dev"


def test_trainer_that_is_not_a_mapping_is_rejected(tmp_path):
    path = write(tmp_path, with_extra("trainer: 5\n"))
    with pytest.raises(ConfigError, match=r"`trainer`: expected a mapping, got int 5") as err:
        load_config(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("value", ['"42"', "true", "4.5"])
def test_seed_must_be_an_integer(tmp_path, value):
    path = write(tmp_path, with_extra(f"seed: {value}\n"))
    with pytest.raises(ConfigError, match=r"`seed`: expected an int") as err:
        load_config(path)
    assert "set `seed` to an int" in str(err.value)


def test_task_and_model_target_together_are_rejected(tmp_path):
    path = write(tmp_path, with_extra("").replace("encoder: transformer", "_target_: my.Model"))
    with pytest.raises(ConfigError, match="both `task: asr1` and `model._target_: my.Model`"):
        load_config(path)


def test_neither_task_nor_model_target_is_rejected(tmp_path):
    path = write(tmp_path, "model: {encoder: rnn}\ndata: {train: a, valid: b}\n")
    with pytest.raises(ConfigError, match="neither `task` nor `model._target_`") as err:
        load_config(path)
    assert "task: asr1" in err.value.fix


def test_model_target_alone_is_accepted(tmp_path):
    path = write(tmp_path, "model: {_target_: my.Model, hidden: 3}\ndata: {train: a, valid: b}\n")
    cfg = load_config(path)
    assert cfg.task is None and cfg.model.hidden == 3


def test_espnet2_style_best_model_criterion_gets_the_espnet3_spelling_as_fix(tmp_path):
    path = write(tmp_path, with_extra("best_model_criterion: [[valid, acc, max]]\n"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "best_model_criterion[0]"
    assert "[valid/acc, K, max]" in str(err.value)


@pytest.mark.parametrize(
    "criterion", ["[[valid/loss, 0, min]]", "[[valid/loss, 3, lowest]]", "[[valid/loss, 3]]", "[]"]
)
def test_malformed_best_model_criterion_is_rejected(tmp_path, criterion):
    path = write(tmp_path, with_extra(f"best_model_criterion: {criterion}\n"))
    with pytest.raises(ConfigError, match="best_model_criterion"):
        load_config(path)


def test_scheduler_interval_must_be_step_or_epoch(tmp_path):
    path = write(tmp_path, with_extra("scheduler_interval: batch\n"))
    with pytest.raises(ConfigError, match="'batch' is not one of step, epoch"):
        load_config(path)


def test_overrides_change_add_and_flow_through_interpolations(tmp_path):
    cfg = load_config(
        write(tmp_path, MINIMAL),
        [
            "trainer.max_epochs=3",
            "+trainer.limit_train_batches=5",
            "exp_dir=/runs/x",
            "seed=7",
            "scheduler_monitor=valid/acc",  # null in the defaults, still an existing key
            "~scheduler.warmup_steps",
        ],
    )
    assert cfg.trainer.max_epochs == 3
    assert cfg.trainer.limit_train_batches == 5
    assert cfg.stats_dir == "/runs/x/stats"
    assert cfg.seed == 7
    assert cfg.scheduler_monitor == "valid/acc"
    assert "warmup_steps" not in cfg.scheduler


def test_override_of_a_missing_key_suggests_plus(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, MINIMAL), ["trainer.limit_train_batches=5"])
    assert "`+trainer.limit_train_batches=5`" in str(err.value)


def test_plus_override_of_an_existing_key_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="adds a key that already exists") as err:
        load_config(write(tmp_path, MINIMAL), ["+trainer.max_epochs=3"])
    assert "`trainer.max_epochs=3`" in err.value.fix


def test_override_values_are_validated_too(tmp_path):
    with pytest.raises(ConfigError, match="`seed`: expected an int"):
        load_config(write(tmp_path, MINIMAL), ["seed=abc"])


def test_a_users_scheduler_replaces_the_default_block_instead_of_merging(tmp_path):
    path = write(
        tmp_path,
        with_extra(
            "scheduler: {_target_: torch.optim.lr_scheduler.ReduceLROnPlateau, factor: 0.5}\n"
        ),
    )
    cfg = load_config(path)
    assert OmegaConf.to_container(cfg.scheduler) == {
        "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "factor": 0.5,
    }


def test_multi_optimizer_config_drops_the_default_single_optimizer(tmp_path):
    path = write(
        tmp_path,
        with_extra("optimizers: {gen: {optimizer: {_target_: torch.optim.Adam}, params: [encoder]}}\n"),
    )
    cfg = load_config(path)
    assert cfg.optimizer is None and cfg.scheduler is None


def test_optimizer_and_optimizers_together_are_rejected(tmp_path):
    path = write(
        tmp_path,
        with_extra(
            "optimizer: {_target_: torch.optim.Adam}\n"
            "optimizers: {gen: {optimizer: {_target_: torch.optim.Adam}, params: [encoder]}}\n"
        ),
    )
    with pytest.raises(ConfigError, match="both `optimizer` and `optimizers`"):
        load_config(path)


def test_broken_interpolation_names_the_key(tmp_path):
    path = write(tmp_path, with_extra("stats_dir: ${nowhere.stats}\n"))
    with pytest.raises(ConfigError, match="cannot resolve interpolation") as err:
        load_config(path)
    assert "stats_dir" in err.value.key


def test_a_top_level_list_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match="not a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_save_config_resolves_a_copy_and_redacts_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-123")
    text = with_extra("logging: {wandb: {project: p, api_key: abc, note: wandb-secret-123}}\n")
    text = text.replace("  encoder: transformer\n", "  encoder: transformer\n  hf_token: hf_xyz\n")
    path = write(tmp_path, text)
    cfg = load_config(path)
    out = save_config(cfg, tmp_path / "exp" / "config.yaml")
    saved = yaml.safe_load(out.read_text())
    assert saved["logging"]["wandb"] == {"project": "p", "api_key": "***", "note": "***"}
    assert saved["model"]["hf_token"] == "***"
    assert saved["data"]["token_type"] == "char"  # vocabulary settings are not secrets
    assert saved["model"]["token_list"] == "exp/train/tokens.txt"  # resolved
    assert "wandb-secret-123" not in out.read_text() and "hf_xyz" not in out.read_text()
    # The caller's config keeps its interpolations: later stages may still override exp_dir.
    assert OmegaConf.is_interpolation(cfg, "stats_dir")
    assert OmegaConf.is_interpolation(cfg.model, "token_list")


def test_a_saved_config_loads_back(tmp_path):
    original = load_config(TINY, [f"exp_dir={tmp_path}/exp"])
    saved = save_config(original, tmp_path / "train.yaml")
    again = load_config(saved)
    assert again.optimizers is None and again.model.encoder == "transformer"
    assert again.exp_dir == f"{tmp_path}/exp"
