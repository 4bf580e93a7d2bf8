"""Every best_model_criterion entry keeps its own top-K; the pruner keeps their union plus the latest."""

from __future__ import annotations

import json
import math

import pytest
import torch

from espnet3.orchestration.criteria import BestCriterion, Report, checkpoints_to_keep, parse_criteria
from espnet3.orchestration.pruning import CheckpointPruner, prune, read_reports

ACC = BestCriterion("valid/acc", 2, "max")
LOSS = BestCriterion("valid/loss", 2, "min")
# (acc, loss) per validation: acc and loss disagree on which epochs were best.
HISTORY = [(0.50, 3.0), (0.70, 2.9), (0.60, 1.0), (0.65, 1.1), (0.55, 2.0), (0.40, 5.0)]


def _reports(history=HISTORY) -> list[Report]:
    return [Report(f"checkpoint_{i}", {"valid/acc": acc, "valid/loss": loss, "step": i}, i)
            for i, (acc, loss) in enumerate(history)]


def test_each_criterion_ranks_by_its_own_metric_and_direction():
    reports = _reports()
    assert [r.name for r in ACC.best(reports)] == ["checkpoint_1", "checkpoint_3"]
    assert [r.name for r in LOSS.best(reports)] == ["checkpoint_2", "checkpoint_3"]
    assert ACC.averaged_name == "valid.acc.ave_2best.pth"


def test_the_union_of_every_top_k_and_the_latest_are_kept():
    keep = checkpoints_to_keep(_reports(), [ACC, LOSS])
    assert keep == {"checkpoint_1", "checkpoint_2", "checkpoint_3", "checkpoint_5"}


def test_pruning_as_reports_arrive_never_drops_a_final_top_k_member():
    """Pruning after every report gives the same survivors as deciding once at the end."""
    reports = _reports()
    alive: set[str] = set()
    for n in range(1, len(reports) + 1):
        seen = [r for r in reports[:n] if r.name in alive or r.order == n - 1]
        alive = checkpoints_to_keep(seen, [ACC, LOSS])
    assert alive == checkpoints_to_keep(reports, [ACC, LOSS])


def test_reports_without_the_metric_or_with_nan_are_not_ranked():
    reports = [Report("a", {"valid/loss": math.nan}, 0), Report("b", {"valid/acc": 0.1}, 1),
               Report("c", {"valid/loss": 4.0}, 2)]
    assert [r.name for r in LOSS.best(reports)] == ["c"]


def test_ties_go_to_the_later_checkpoint():
    reports = [Report("early", {"valid/loss": 1.0}, 0), Report("late", {"valid/loss": 1.0}, 1)]
    assert [r.name for r in BestCriterion("valid/loss", 1, "min").best(reports)] == ["late"]


def test_parse_criteria_keeps_every_entry_in_order():
    criteria = parse_criteria([["valid/acc", 10, "max"], ["valid/loss", 10, "min"]])
    assert [c.averaged_name for c in criteria] == ["valid.acc.ave_10best.pth", "valid.loss.ave_10best.pth"]
    with pytest.raises(ValueError, match="min or max"):
        BestCriterion("valid/loss", 1, "lowest")


def _checkpoint_dirs(run_dir, history=HISTORY):
    for i, (acc, loss) in enumerate(history):
        directory = run_dir / f"checkpoint_2026-01-01_00-00-0{i}.000000"
        directory.mkdir(parents=True)
        torch.save({"state_dict": {}}, directory / "checkpoint.ckpt")
        (directory / "metrics.json").write_text(json.dumps({"valid/acc": acc, "valid/loss": loss, "step": i}))


def test_pruner_empties_unwanted_checkpoints_but_keeps_their_directories(tmp_path):
    """Ray's run snapshot lists every reported checkpoint: a missing directory would break --resume."""
    import ray.train

    _checkpoint_dirs(tmp_path)
    pruner = CheckpointPruner(tmp_path, [ACC, LOSS])
    latest = ray.train.Checkpoint.from_directory(str(sorted(tmp_path.iterdir())[-1]))
    pruner.after_report(run_context=None, metrics=[{}], checkpoint=latest)
    dirs = sorted(tmp_path.iterdir())
    assert len(dirs) == len(HISTORY)
    kept = [i for i, d in enumerate(dirs) if (d / "checkpoint.ckpt").exists()]
    assert kept == [1, 2, 3, 5]
    assert all((d / "metrics.json").is_file() for d in dirs)
    assert [r.name for r in read_reports(tmp_path)] == [d.name for d in dirs]
    assert prune(tmp_path, [ACC, LOSS]) == []  # idempotent


def test_pruner_leaves_alone_a_checkpoint_still_being_uploaded_beside_the_reported_one(tmp_path):
    """Uploads run in the background: while the controller prunes for one report, the next
    checkpoint can be half-written (an empty metrics.json) beside it; it is neither read nor pruned,
    and the reported checkpoint counts as the latest (kept: a resume starts from it)."""
    import ray.train

    _checkpoint_dirs(tmp_path)
    reported = sorted(tmp_path.iterdir())[-1]
    uploading = tmp_path / "checkpoint_2026-01-01_00-00-09.000000"
    uploading.mkdir()
    (uploading / "checkpoint.ckpt").write_bytes(b"partial")
    (uploading / "metrics.json").write_text("")
    CheckpointPruner(tmp_path, [ACC, LOSS]).after_report(
        run_context=None, metrics=[{}], checkpoint=ray.train.Checkpoint.from_directory(str(reported)))
    assert (uploading / "checkpoint.ckpt").read_bytes() == b"partial"
    assert (reported / "checkpoint.ckpt").exists()
    assert [i for i, d in enumerate(sorted(tmp_path.iterdir())[:-1]) if (d / "checkpoint.ckpt").exists()] == [1, 2, 3, 5]


# --------------------------------------------- criteria checked against what the model logs, before Ray
def _check(criteria, logged, missing="error"):
    from espnet3.driver.model_checks import check_criteria

    return check_criteria({"best_model_criterion": criteria, "best_model_criterion_missing": missing},
                          logged, "train.yaml")


def test_a_criterion_the_model_does_not_log_fails_before_ray_with_what_it_logs():
    from espnet3.config import ConfigError

    with pytest.raises(ConfigError) as err:
        _check([["valid/loss", 3, "min"], ["valid/si_snr", 3, "max"]], {"valid/loss", "valid/si_snr_loss"})
    assert err.value.key == "best_model_criterion[1]"
    assert "valid/si_snr" in str(err.value) and "valid/si_snr_loss" in str(err.value)
    assert "best_model_criterion_missing: warn" in str(err.value)


def test_espnet2_counters_are_always_reported():
    criteria = [["train/total_count", 10, "max"], ["valid/total_count", 1, "max"]]
    assert _check(criteria, {"valid/loss"}) == criteria


def test_warn_drops_a_missing_criterion_as_espnet2_does(capsys):
    kept = _check([["valid/si_snr", 3, "max"], ["valid/loss", 3, "min"]], {"valid/loss", "valid/si_snr_loss"}, "warn")
    assert kept == [["valid/loss", 3, "min"]]
    out = capsys.readouterr().out
    assert "warning" in out and "valid/si_snr," in out and "valid/si_snr_loss" in out


def test_warn_with_no_criterion_left_keeps_the_latest_checkpoints():
    assert _check([["valid/acc", 5, "max"]], {"valid/loss"}, "warn") == [["train/total_count", 5, "max"]]


def test_the_module_reports_the_keys_validation_and_training_log():
    """A real batch through the model: its stats, the loss, and each named optimizer's loss."""
    from espnet3.components.modeling.lightning_module import ESPnetLightningModule
    from toy_models import ESPnet2StyleGAN, espnet2_gan_batches, espnet2_gan_config

    module = ESPnetLightningModule(ESPnet2StyleGAN(), espnet2_gan_config())
    logged = module.logged_metrics(espnet2_gan_batches(1, seed=0)[0])
    for phase in ("train", "valid"):
        assert {f"{phase}/generator_loss", f"{phase}/discriminator_loss",
                f"{phase}/generator/loss", f"{phase}/discriminator/loss"} <= logged
    assert "train/generator/update_step" in logged and "valid/generator/update_step" not in logged
    assert module.training  # left as it was


def test_iteration_counts_skip_sanity_checks_and_survive_a_checkpoint():
    from types import SimpleNamespace

    from espnet3.orchestration.counters import IterationCounts

    counts = IterationCounts()
    trainer = SimpleNamespace(sanity_checking=True)
    counts.on_validation_batch_end(trainer, None, None, None, 0)
    trainer.sanity_checking = False
    for i in range(3):
        counts.on_train_batch_end(trainer, None, None, None, i)
    counts.on_validation_batch_end(trainer, None, None, None, 0)
    assert counts.metrics() == {"train/total_count": 3.0, "valid/total_count": 1.0}
    resumed = IterationCounts()
    resumed.load_state_dict(counts.state_dict())
    resumed.on_train_batch_end(trainer, None, None, None, 3)
    assert resumed.metrics()["train/total_count"] == 4.0
