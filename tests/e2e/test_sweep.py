"""python -m espnet3.launch --sweep: sweep-file validation before Ray starts, and a real ASHA sweep."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from espnet3 import launch
from espnet3.config import load_config
from espnet3.errors import SweepError
from espnet3.sweep.spec import SweepSpec
from paths import REPO, TINY

TINY_SWEEP = REPO / "configs" / "sweep_tiny.yaml"


def _sweep_file(tmp_path: Path, **changes) -> Path:
    sweep = yaml.safe_load(TINY_SWEEP.read_text())
    sweep.update(base=str(TINY), output_dir=str(tmp_path / "out"))
    sweep.update(changes)
    path = tmp_path / "my_sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def _error(path: Path) -> str:
    with pytest.raises(SweepError) as info:
        SweepSpec.from_file(path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_shipped_sweeps_validate():
    for name in ("sweep_tiny.yaml", "sweep_digits.yaml"):
        spec = SweepSpec.from_file(REPO / "configs" / name)
        assert spec.output_dir == Path("sweeps") / Path(name).stem and spec.scheduler is not None


def test_unknown_space_path_names_the_key_and_suggests_plus(tmp_path):
    message = _error(_sweep_file(tmp_path, space={"model.encoder_conf.num_blockz": {"choice": [1, 2]}}))
    assert "space.model.encoder_conf.num_blockz" in message and "+model.encoder_conf.num_blockz" in message


def test_plus_adds_a_new_key(tmp_path):
    spec = SweepSpec.from_file(_sweep_file(tmp_path, space={"+optimizer.weight_decay": {"choice": [0.0, 0.01]}}))
    assert spec.space[0].add and spec.space[0].path == "optimizer.weight_decay"


def test_bad_distribution_name(tmp_path):
    message = _error(_sweep_file(tmp_path, space={"optimizer.lr": {"logunifrom": [1e-4, 1e-2]}}))
    assert "space.optimizer.lr" in message and "logunifrom" in message and "loguniform" in message


def test_bad_bounds(tmp_path):
    message = _error(_sweep_file(tmp_path, space={"optimizer.lr": {"loguniform": [0, 1e-2]}}))
    assert "space.optimizer.lr" in message


def test_sampled_value_of_the_wrong_type_is_caught_up_front(tmp_path):
    message = _error(_sweep_file(tmp_path, space={"report_every_n_steps": {"choice": [2, "often"]}}))
    assert "space.report_every_n_steps" in message and "often" in message


def test_optuna_with_grid_is_refused(tmp_path):
    message = _error(_sweep_file(tmp_path, search="optuna", space={"optimizer.lr": {"grid": [1e-3, 1e-2]}}))
    assert "space.optimizer.lr" in message and "grid" in message and "optuna" in message


def test_missing_metric(tmp_path):
    path = _sweep_file(tmp_path)
    sweep = yaml.safe_load(path.read_text())
    del sweep["metric"]
    path.write_text(yaml.safe_dump(sweep))
    assert "`metric`" in _error(path)


@pytest.mark.parametrize("metric", ["loss", "valid/bleu"])
def test_metric_the_model_does_not_log(tmp_path, metric):
    assert "`metric`" in _error(_sweep_file(tmp_path, metric=metric))


def test_bad_mode(tmp_path):
    message = _error(_sweep_file(tmp_path, mode="minimize"))
    assert "`mode`" in message and "minimize" in message


def test_existing_sweep_is_refused_without_resume(tmp_path, capsys):
    path = _sweep_file(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.csv").write_text("")
    assert launch.main(["--sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "`name`" in err
    assert launch.main(["--sweep", str(path), "--dry-run", "--resume"]) == 0


def test_config_and_sweep_are_exclusive(tmp_path):
    with pytest.raises(SystemExit):
        launch.parse_args(["--config", str(TINY), "--sweep", str(TINY_SWEEP)])


@pytest.mark.slow
def test_tiny_asha_sweep_stops_trials_early_and_writes_a_runnable_best_config(tmp_path, ray_cluster, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # best.yaml's exp_dir is exp/<name>_best under the launch directory
    path = _sweep_file(tmp_path)
    overrides = [f"data.train={tmp_path}/data/train", f"data.valid={tmp_path}/data/valid", f"data.test.test={tmp_path}/data/test"]
    assert launch.main(["--sweep", str(path), "--num-gpus", "0", *overrides]) == 0
    out = tmp_path / "out"
    assert str(out) in capsys.readouterr().out

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["status"] == "TERMINATED" for r in rows)
    assert {"optimizer.lr", "model.encoder_conf.linear_units", "best valid/loss"} <= set(rows[0])
    iterations = [int(r["iterations"]) for r in rows]
    assert max(iterations) == 4 and min(iterations) < 4  # ASHA stopped at least one trial early
    assert (out / "metric.png").stat().st_size > 0

    best = load_config(out / "best.yaml")
    assert best.name == "my_sweep_best" and best.exp_dir == str(tmp_path / "exp" / "my_sweep_best")
    assert launch.main([
        "--config", str(out / "best.yaml"), "--stages", "train", "--num-workers", "1",
        "trainer.max_epochs=1", "report_every_n_steps=null",
    ]) == 0
    assert (tmp_path / "exp" / "my_sweep_best" / "valid.loss.ave_2best.pth").is_file()
