"""callbacks:, loggers:, ema:, trainer.strategy: parsed and checked before Ray starts."""

from __future__ import annotations

import textwrap

import pytest
from omegaconf import OmegaConf

from espnet3 import launch
from espnet3.config import ConfigError, load_config
from espnet3.orchestration.train_spec import TrainSpec
from paths import TINY

BASE = """
task: asr1
model:
  token_list: ${data.token_list}
  encoder: transformer
data:
  train: data/train
  valid: data/valid
"""


def _load(tmp_path, extra: str = "", overrides=()):
    path = tmp_path / "train.yaml"
    path.write_text(textwrap.dedent(BASE) + textwrap.dedent(extra))
    return load_config(path, list(overrides))


def _spec(tmp_path, extra: str = "", overrides=()) -> TrainSpec:
    return TrainSpec.from_config(OmegaConf.to_container(_load(tmp_path, extra, overrides), resolve=True))


def _error(tmp_path, extra: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, extra)
    assert str(tmp_path / "train.yaml") in str(err.value)
    return err.value


def test_user_callbacks_and_loggers_come_after_espnet3s_shorthands(tmp_path):
    spec = _spec(tmp_path, """
        callbacks:
          - {_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: valid/loss, patience: 2}
        loggers:
          - {_target_: lightning.pytorch.loggers.CSVLogger, save_dir: "${exp_dir}", name: csv}
        logging: {wandb: {project: p, mode: offline}}
    """)
    assert [e.key for e in spec.loggers] == ["logging.tensorboard", "logging.wandb", "loggers[0]"]
    assert spec.loggers[2].block["save_dir"] == "exp/train"
    stopper = spec.callbacks[0].build()
    assert type(stopper).__name__ == "EarlyStopping" and stopper.patience == 2


def test_a_model_checkpoint_callback_is_refused_because_checkpoints_are_rays(tmp_path):
    err = _error(tmp_path, "callbacks: [{_target_: lightning.pytorch.callbacks.ModelCheckpoint}]\n")
    assert err.key == "callbacks[0]"
    assert "Ray Train" in str(err) and "best_model_criterion" in str(err)


def test_lightnings_ema_and_progress_bars_are_refused_with_the_espnet3_way(tmp_path):
    err = _error(tmp_path, "callbacks: [{_target_: lightning.pytorch.callbacks.EMAWeightAveraging}]\n")
    assert "`ema:`" in str(err)
    err = _error(tmp_path, "callbacks: [{_target_: lightning.pytorch.callbacks.TQDMProgressBar}]\n")
    assert "progress line" in str(err)


@pytest.mark.parametrize("entry, expected", [
    ("{_target_: espnet3.no_such.Callback}", "cannot be imported"),
    ("{_target_: torch.nn.Linear, in_features: 2, out_features: 2}", "is not a lightning.pytorch"),
    ("{_target_: lightning.pytorch.callbacks.EarlyStopping, monitr: valid/loss}", "monitr"),
    ("lightning.pytorch.callbacks.EarlyStopping", "{_target_: pkg.Class, ...} block"),
])
def test_a_bad_callback_entry_names_the_entry_and_the_problem(tmp_path, entry, expected):
    err = _error(tmp_path, f"callbacks: [{entry}]\n")
    assert err.key.startswith("callbacks[0]") and expected in str(err)


def test_a_logger_must_be_a_lightning_logger(tmp_path):
    err = _error(tmp_path, "loggers: [{_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: x}]\n")
    assert err.key == "loggers[0]._target_" and "Logger" in str(err)


@pytest.mark.parametrize("key, hint", [("callbacks", "`callbacks:`"), ("logger", "`loggers:`"),
                                       ("devices", "--num-gpus"), ("enable_checkpointing", "best_model_criterion")])
def test_trainer_keys_espnet3_sets_are_refused_with_where_to_say_it(tmp_path, key, hint):
    err = _error(tmp_path, f"trainer: {{{key}: null}}\n")
    assert err.key == f"trainer.{key}" and hint in str(err)


def test_ema_block_is_parsed_and_checked(tmp_path):
    spec = _spec(tmp_path, "ema: {decay: 0.99, start_step: 10, use_for: none}\n")
    assert (spec.ema.decay, spec.ema.start_step, spec.ema.every_n_steps, spec.ema.exported) == (0.99, 10, 1, False)
    assert _spec(tmp_path).ema is None
    assert _error(tmp_path, "ema: {decay: 1.5}\n").key == "ema.decay"
    assert _error(tmp_path, "ema: {use_for: evaluate}\n").key == "ema.use_for"
    assert "valid: decay" in str(_error(tmp_path, "ema: {decy: 0.9}\n"))


def test_strategy_names_map_to_rays_lightning_strategies(tmp_path):
    from ray.train.lightning import RayDDPStrategy, RayFSDPStrategy

    assert _spec(tmp_path).strategy.name == "ddp"
    ddp = _spec(tmp_path).strategy.build({"find_unused_parameters": True})
    assert isinstance(ddp, RayDDPStrategy) and ddp._ddp_kwargs["find_unused_parameters"] is True
    fsdp = _spec(tmp_path, overrides=["trainer.strategy={name: fsdp, sharding_strategy: SHARD_GRAD_OP}"])
    assert fsdp.strategy.options == {"sharding_strategy": "SHARD_GRAD_OP"}
    assert "strategy" not in fsdp.trainer
    assert isinstance(fsdp.strategy.build({"find_unused_parameters": False}), RayFSDPStrategy)


def test_deepspeed_is_refused_with_the_reason(tmp_path):
    err = _error(tmp_path, "trainer: {strategy: deepspeed}\n")
    assert err.key == "trainer.strategy" and "not supported yet" in str(err)


@pytest.mark.parametrize("extra, reason", [
    ("trainer: {strategy: fsdp}\noptimizers: {all: {optimizer: {_target_: torch.optim.Adam}, params: [encoder]}}\n",
     "one backward per forward"),
    ("trainer: {strategy: fsdp}\nema: {decay: 0.9}\n", "sharded"),
    ("trainer: {strategy: fsdp, gradient_clip_val: 1.0}\n", "gradient_clip_algorithm: value"),
])
def test_fsdp_combinations_that_fail_in_workers_are_refused_up_front(tmp_path, extra, reason):
    assert reason in str(_error(tmp_path, extra))
    _load(tmp_path, extra.replace("strategy: fsdp", "strategy: ddp"))  # fine under DDP


def test_fsdp_on_cpu_workers_is_a_usage_error_before_ray_starts(tmp_path, capsys):

    tiny = TINY
    code = launch.main(["--config", str(tiny), "--num-gpus", "0", "--dry-run", f"exp_dir={tmp_path}/exp",
                        "trainer.strategy=fsdp"])
    assert code == launch.EXIT_USAGE
    assert "needs GPU workers" in capsys.readouterr().err


def test_every_best_model_criterion_is_kept(tmp_path):
    spec = _spec(tmp_path, "best_model_criterion: [[valid/acc, 10, max], [valid/loss, 5, min]]\n")
    assert [(c.metric, c.keep, c.mode) for c in spec.criteria] == [("valid/acc", 10, "max"), ("valid/loss", 5, "min")]
    assert spec.default_criterion.averaged_name == "valid.acc.ave_10best.pth"
