"""ESPnet2 training configs convert into train.yamls that load, build and train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from espnet3.config import load_config
from espnet3.from_espnet2 import convert, convert_file, main
from espnet3.utils.task_utils import build_model
from paths import FIXTURES

FIXTURES = FIXTURES / "espnet2_configs"
CONFIGS = sorted(FIXTURES.glob("*.yaml"))
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "<sos/eos>"]


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("\n".join(TOKENS) + "\n")
    return path


def converted(tmp_path: Path, name: str, *overrides: str):
    out = tmp_path / "train.yaml"
    conversion = convert_file(FIXTURES / name, out, "asr1", overrides)
    return conversion, out


def test_there_are_fixtures_for_each_encoder_family():
    names = {p.stem for p in CONFIGS}
    assert {"train_asr_transformer", "train_asr_conformer", "train_asr_e_branchformer", "train_asr_rnn"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_converted_config_loads_builds_and_trains_one_step(tmp_path, token_file, config):
    out = tmp_path / "train.yaml"
    convert_file(config, out)
    cfg = load_config(out, [f"data.token_list={token_file}"])
    assert cfg.model.token_list == str(token_file)
    assert cfg.data.train == "data/train"

    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.token_list == TOKENS
    model.train()
    lengths = torch.tensor([16000, 12000])
    speech = torch.randn(2, 16000)
    text = torch.tensor([[2, 3, 4, 5], [6, 2, -1, -1]])
    loss, stats, weight = model(
        speech=speech, speech_lengths=lengths, text=text, text_lengths=torch.tensor([4, 2])
    )
    assert torch.isfinite(loss).all()
    assert "loss" in stats and int(weight) == 2
    loss.sum().backward()
    encoder_grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in encoder_grads)
    assert any(g.abs().sum() > 0 for g in encoder_grads)


def test_transformer_recipe_options_map_to_train_yaml_keys(tmp_path):
    conversion, out = converted(tmp_path, "train_asr_transformer.yaml")
    cfg = conversion.config
    assert cfg["task"] == "asr1"
    assert cfg["optimizer"] == {"_target_": "torch.optim.Adam", "lr": 0.002}
    assert cfg["scheduler"] == {"_target_": "espnet2.schedulers.warmup_lr.WarmupLR", "warmup_steps": 25000}
    assert cfg["scheduler_interval"] == "step"
    assert cfg["best_model_criterion"] == [["valid/acc", 10, "max"]]
    assert cfg["best_model_criterion_missing"] == "warn"  # ESPnet2's trainer warns and goes on
    # grad_clip is unset, and ESPnet2 clips at 5 by default: the converted run must too.
    assert cfg["trainer"] == {"max_epochs": 200, "accumulate_grad_batches": 1, "gradient_clip_val": 5.0}
    assert cfg["dataloader"] == {"batch_type": "folded", "batch_size": 64, "fold_length": [80000, 150]}
    assert cfg["model"]["init"] == "xavier_uniform"
    assert cfg["model"]["token_list"] == "${data.token_list}"
    assert any("folded: fold_length [80000, 150]" in note for note in conversion.notes)
    assert conversion.unmapped == {}  # `patience: none` is ESPnet2's default


def test_conformer_amp_clipping_and_unmapped_keys(tmp_path):
    conversion, out = converted(tmp_path, "train_asr_conformer.yaml")
    cfg = conversion.config
    assert cfg["seed"] == 2022
    assert cfg["trainer"] == {
        "max_epochs": 70,
        "accumulate_grad_batches": 4,
        "gradient_clip_val": 5,
        "precision": "16-mixed",
        "log_every_n_steps": 400,
    }
    assert cfg["dataloader"] == {"batch_type": "numel", "batch_bins": 16000000, "num_workers": 4,
                                 "sort_in_batch": "descending", "sort_batch": "descending"}
    assert cfg["model"]["specaug"] == "specaug"
    assert set(conversion.unmapped) == {"num_att_plot", "cudnn_deterministic"}
    header = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert any("num_att_plot: 0 -> no train.yaml equivalent" in line for line in header)


def test_reducelronplateau_steps_per_epoch_on_the_validation_loss(tmp_path):
    conversion, _ = converted(tmp_path, "train_asr_rnn.yaml")
    cfg = conversion.config
    assert cfg["optimizer"]["_target_"] == "torch.optim.Adadelta"
    assert cfg["scheduler"] == {
        "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "mode": "min",
        "factor": 0.5,
        "patience": 1,
    }
    assert cfg["scheduler_interval"] == "epoch"
    assert cfg["scheduler_monitor"] == "valid/loss"
    assert cfg["best_model_criterion"] == [["valid/loss", 3, "min"], ["valid/acc", 3, "max"]]
    assert "patience" in conversion.unmapped  # early stopping has no train.yaml key


def test_freeze_param_wandb_and_noam_schedule(tmp_path):
    conversion, _ = converted(tmp_path, "train_asr_ctc_conformer_noam.yaml")
    cfg = conversion.config
    assert cfg["model"]["freeze_param"] == ["encoder.embed"]
    assert cfg["model"]["decoder"] is None
    assert cfg["logging"] == {"wandb": {"project": "ctc_conformer", "entity": "speech-lab"}}
    assert cfg["scheduler"]["_target_"] == "espnet2.schedulers.noam_lr.NoamLR"
    assert cfg["optimizer"] == {"_target_": "torch.optim.AdamW", "lr": 0.001, "betas": [0.9, 0.98]}
    assert cfg["trainer"]["gradient_clip_val"] == 1.0
    assert set(conversion.unmapped) == {"unused_parameters"}


def test_unset_training_options_keep_espnet2_defaults_not_train_yaml_ones():
    conversion = convert({"encoder": "conformer"})
    cfg = conversion.config
    assert cfg["trainer"] == {"max_epochs": 40, "gradient_clip_val": 5.0}
    assert cfg["optimizer"] == {"_target_": "torch.optim.Adadelta"}
    assert cfg["scheduler"] is None
    assert any("its defaults were written" in note for note in conversion.notes)


def test_optimizer_without_a_torch_class_is_reported_not_guessed():
    conversion = convert({"optim": "lamb", "optim_conf": {"lr": 0.01}, "scheduler": "lambdalr"})
    assert "optimizer" not in conversion.config and "scheduler" not in conversion.config
    assert conversion.config["trainer"]["max_epochs"] == 40
    assert set(conversion.unmapped) == {"optim", "optim_conf", "scheduler", "scheduler_conf"}


def test_espnet2_sgd_keeps_its_default_learning_rate():
    conversion = convert({"optim": "sgd"})
    assert conversion.config["optimizer"] == {"_target_": "torch.optim.SGD", "lr": 0.1}


def test_cli_applies_overrides_with_load_config_rules(tmp_path, capsys):
    out = tmp_path / "train.yaml"
    rc = main(
        [
            str(FIXTURES / "train_asr_rnn.yaml"),
            "-o",
            str(out),
            "trainer.max_epochs=3",
            "dataloader.num_workers=2",  # a default the conversion did not write
            "+model.normalize=global_mvn",
            "+model.normalize_conf.stats_file=${stats_dir}/train/feats_stats.npz",
        ]
    )
    assert rc == 0
    assert "not mapped: patience" in capsys.readouterr().out
    cfg = load_config(out)
    assert cfg.trainer.max_epochs == 3
    assert cfg.dataloader.num_workers == 2
    assert cfg.model.normalize_conf.stats_file == "exp/train/stats/train/feats_stats.npz"
    assert yaml.safe_load(out.read_text())["model"]["normalize"] == "global_mvn"


def test_cli_reports_an_override_typo_and_fails(tmp_path, capsys):
    rc = main([str(FIXTURES / "train_asr_rnn.yaml"), "-o", str(tmp_path / "t.yaml"), "trainer.max_epoch=3"])
    assert rc == 1
    assert "`+trainer.max_epoch=3`" in capsys.readouterr().err


def test_preprocessing_options_move_to_the_preprocessor_block(tmp_path):
    recipe = yaml.safe_load((FIXTURES / "train_asr_transformer.yaml").read_text())
    recipe.update(cleaner="tacotron", speech_volume_normalize=1.0, non_linguistic_symbols="data/nlsyms.txt",
                  token_type="word", batch_type="length", batch_bins=300000)
    conversion = convert(recipe, task="asr1")
    cfg = conversion.config
    assert cfg["preprocessor"] == {"cleaner": "tacotron", "speech_volume_normalize": 1.0,
                                   "non_linguistic_symbols": "data/nlsyms.txt"}
    assert cfg["data"]["token_type"] == "word"
    assert cfg["dataloader"] == {"batch_type": "length", "batch_bins": 300000, "batch_size": 64}
    assert not set(conversion.unmapped) & {"cleaner", "speech_volume_normalize", "non_linguistic_symbols"}
