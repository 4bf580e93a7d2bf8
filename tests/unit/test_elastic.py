"""Elastic sizes on the command line, the batching rule of a resized group, and what train_result.json records."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from ray.train.v2.api.config import FailureConfig
from ray.train.v2.api.exceptions import WorkerGroupError
from ray.train.v2._internal.execution.failure_handling import FailureDecision

from espnet3 import launch
from espnet3.orchestration.elastic import Attempt, history
from espnet3.orchestration.criteria import Report
from espnet3.orchestration.failures import RetryCurablePolicy
from espnet3.orchestration.preemption import PREEMPTION_KEY, LocalNotice, PreemptionStop
from espnet3.orchestration.train_spec import TrainSpec
from toy_models import make_trainer

TINY = "configs/tiny_asr.yaml"


def test_min_max_sizes_become_rays_elastic_scaling():
    spec = launch.parse_args(["--config", TINY, "--num-workers", "1-4"])
    assert (spec.min_workers, spec.world_size, spec.scaling, spec.size_text()) == (1, 4, (1, 4), "1-4")
    spec = launch.parse_args(["--config", TINY, "--num-gpus", "2-8"])
    assert spec.use_gpu and spec.scaling == (2, 8)
    spec = launch.parse_args(["--config", TINY, "--num-workers", "3-3"])
    assert not spec.elastic and spec.scaling == 3


@pytest.mark.parametrize("value, message", [
    ("4-2", "MIN is above MAX; write it as 2-4"), ("two", "takes N or MIN-MAX"), ("0-2", "MIN must be between 1 and MAX"),
])
def test_bad_sizes_are_usage_errors_naming_the_option(value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        launch.parse_args(["--config", TINY, "--num-workers", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--num-workers" in err and message in err


def _spec(accumulate: int = 1) -> TrainSpec:
    return TrainSpec.from_config({"trainer": {"accumulate_grad_batches": accumulate}, "exp_dir": "/x", "name": "n",
                                  "best_model_criterion": [["valid/loss", 1, "min"]]})


@pytest.mark.parametrize("world, automatic, accumulate, ratio", [
    (4, True, 1, 1.0), (2, True, 2, 1.0), (1, True, 4, 1.0), (3, True, 2, 1.5), (2, False, 1, 0.5),
])
def test_a_smaller_group_accumulates_to_keep_the_global_batch(world, automatic, accumulate, ratio):
    attempt = Attempt.start(_spec(), world, 4, automatic, None)
    assert (attempt.accumulate_grad_batches, attempt.global_batch_ratio) == (accumulate, ratio)
    assert Attempt.start(_spec(3), world, 4, automatic, None).accumulate_grad_batches == 3 * accumulate


def test_history_lists_each_preemption_and_resize():
    attempts = [Attempt(10.0, 2, 2, 1, 1.0), Attempt(30.0, 1, 2, 2, 1.0, resumed_step=7),
                Attempt(50.0, 2, 2, 1, 1.0, resumed_step=9)]
    notice = {"reason": "node drain", "time": 20.0, "world_size": 2, "checkpoint_step": 7, "epoch": 1}
    reports = [Report("checkpoint_a", {"step": 4}, 0), Report("checkpoint_b", {"step": 7, PREEMPTION_KEY: notice}, 1)]
    story = history(attempts, reports)
    (preemption,) = story["preemptions"]
    assert preemption["world_size_before"] == 2 and preemption["world_size_after"] == 1
    assert preemption["checkpoint_step"] == 7 and preemption["steps_repeated"] == 0
    assert [(r["reason"], r["world_size_before"], r["world_size_after"], r["checkpoint_step"])
            for r in story["resizes"]] == [("preemption", 2, 1, 7), ("grow", 1, 2, 9)]
    assert Attempt(30.0, 1, 2, 2, 1.0, resumed_step=7).line() == (
        "[espnet3] resumed at step 7 with 1 of 2 workers: accumulate_grad_batches 2 (the planned global batch)")
    assert Attempt(10.0, 2, 2, 1, 1.0).line() is None


def test_a_group_stopped_for_a_notice_is_retried_on_the_preemption_budget_only():
    policy = RetryCurablePolicy(FailureConfig(max_failures=0, max_preemption_failures=2))
    stopped = WorkerGroupError("stopped", {0: PreemptionStop("saved"), 1: PreemptionStop("saved")})
    assert policy.make_decision(stopped) == FailureDecision.RETRY
    assert policy.make_decision(stopped) == FailureDecision.RETRY
    assert policy.make_decision(stopped) == FailureDecision.RAISE, "max_preemption_failures=2 spent"
    mixed = WorkerGroupError("mixed", {0: PreemptionStop("saved"), 1: ValueError("bug")})
    assert RetryCurablePolicy(FailureConfig(max_failures=3)).make_decision(mixed) == FailureDecision.RAISE


def test_outside_a_ray_worker_there_is_never_a_notice():
    notice = LocalNotice()
    assert notice() is False and notice.info() is None


class _Indexed(torch.nn.Module):
    """Regression on utterance indices: a batch is ``{"idx": LongTensor}``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        loss = ((self.w - idx.float().mean()) ** 2)
        return loss, {"loss": loss.detach()}, torch.tensor(float(len(idx)))


class _Seen(L.Callback):
    def __init__(self, stop_at=None):
        self.epochs: dict[int, list[int]] = {}
        self.stop_at = stop_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.epochs.setdefault(trainer.current_epoch, []).extend(batch["idx"].tolist())
        if self.stop_at == (trainer.current_epoch, batch_idx):
            trainer.save_checkpoint(self.path)
            raise KeyboardInterrupt  # Lightning's graceful stop: as the preemption stop ends an attempt


def _indexed_loader(sampler):
    return torch.utils.data.DataLoader(list(range(40)), batch_sampler=sampler,
                                       collate_fn=lambda ids: {"idx": torch.tensor(ids)})


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_lightning_resumes_a_re_dealt_epoch_where_the_sampler_stands(tmp_path, before, after):
    """Lightning's own restore plus ResumePosition: the resumed epoch trains exactly its rest and the
    epochs after it keep their full length (Lightning reads a loader's length once)."""
    from espnet3.components.modeling.lightning_module import ESPnetLightningModule
    from espnet3.data.sampler import DistributedBatchSampler
    from espnet3.orchestration.callbacks import ResumePosition

    batches = [list(range(i, i + 2)) for i in range(0, 40, 2)]  # 20 batches of 2 utterances
    config = {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.01}}
    done = 3
    # the old group's first `done` steps, as every old rank trained them
    old = [DistributedBatchSampler(batches, rank=r, world_size=before, shuffle=True, seed=1) for r in range(before)]
    for sampler in old:
        sampler.set_epoch(1)
    trained_before = [u for s in old for b in list(s)[:done] for u in b]
    # rank 0 of the old group, stopped after its step `done` of epoch 1 (a checkpoint at that step's end)
    first = _Seen(stop_at=(1, done - 1))
    first.path = str(tmp_path / "step.ckpt")
    trainer = make_trainer([first], max_epochs=3)
    with pytest.raises(SystemExit):  # Lightning turns the interrupt into a graceful exit of the process
        trainer.fit(ESPnetLightningModule(_Indexed(), config), _indexed_loader(old[0]))
    resumed = DistributedBatchSampler(batches, rank=0, world_size=after, shuffle=True, seed=1)
    resumed.resume(old[0].progress(done))
    seen = _Seen()
    make_trainer([seen, ResumePosition(resumed)], max_epochs=3).fit(
        ESPnetLightningModule(_Indexed(), config), _indexed_loader(resumed), ckpt_path=first.path)
    rest = [u for b in _rest_of(batches, before, after, done) for u in b]
    assert sorted(seen.epochs[1]) == sorted(rest), "exactly rank 0's share of the batches not trained yet"
    if after == 1:  # the only rank: with what the old group trained, the whole epoch once
        assert sorted(trained_before + seen.epochs[1]) == list(range(40))
    full = DistributedBatchSampler(batches, rank=0, world_size=after, shuffle=True, seed=1)
    assert len(seen.epochs[2]) == sum(len(b) for b in full), "the next epoch is whole"


class _Validations(L.Callback):
    """Records each validation's (epoch, step); ``notice_at``: the ranks agree on a preemption notice
    in that (epoch, step), as the notice's collective would."""

    def __init__(self, notice_at=None):
        self.done: list[tuple[int, int]] = []
        self.notice_at = notice_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.notice_at == (trainer.current_epoch, trainer.global_step + 1):
            pl_module.nan_guard.stop_agreed = True

    def on_validation_end(self, trainer, pl_module):
        self.done.append((trainer.current_epoch, trainer.global_step))


@pytest.mark.parametrize("interval, notice_at", [(1.0, (1, 40)), (10, (1, 30)), (10, (1, 33))],
                         ids=["epoch-end", "report-step", "between-reports"])
def test_a_notice_at_a_step_a_validation_follows_is_resumed_with_that_validation(tmp_path, monkeypatch, interval,
                                                                                notice_at):
    """Lightning resumes a checkpoint of a step's end with the next step, skipping a validation due
    after the saved one: Tune would miss that epoch's or report step's report (test_spot_sweep)."""
    from espnet3.components.modeling.lightning_module import ESPnetLightningModule
    from espnet3.data.sampler import DistributedBatchSampler
    from espnet3.orchestration.callbacks import RayReportCallback, ResumePosition

    path = str(tmp_path / "notice.ckpt")
    monkeypatch.setattr(RayReportCallback, "_report", lambda self, trainer, *a, **k: trainer.save_checkpoint(path))
    batches = [list(range(i, i + 2)) for i in range(0, 40, 2)]  # 20 batches a epoch
    config = {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.01}}
    valid = torch.utils.data.DataLoader(list(range(4)), batch_size=2, collate_fn=lambda ids: {"idx": torch.tensor(ids)})

    def sampler():
        return DistributedBatchSampler(batches, rank=0, world_size=1, shuffle=True, seed=1)

    def fit(callbacks, loader, **kwargs):
        make_trainer(callbacks, max_epochs=3, val_check_interval=interval).fit(
            ESPnetLightningModule(_Indexed(), config), loader, valid, **kwargs)

    uninterrupted = _Validations()
    fit([uninterrupted], _indexed_loader(sampler()))
    before = _Validations(notice_at)
    with pytest.raises(PreemptionStop):
        fit([before, RayReportCallback()], _indexed_loader(sampler()))
    resumed = sampler()
    resumed.resume({"epoch": 1, "batches_done": notice_at[1] - 20, "world_size": 1})
    after, trained = _Validations(), _Seen()
    fit([after, trained, ResumePosition(resumed)], _indexed_loader(resumed), ckpt_path=path)

    assert before.done + after.done == uninterrupted.done, "every validation once, at its step"
    assert len(trained.epochs.get(1, [])) == 2 * (40 - notice_at[1]) and len(trained.epochs[2]) == 40


def _rest_of(batches, before, after, done):
    """Rank 0's batches of the resumed epoch in the new group (what DistributedBatchSampler deals)."""
    from espnet3.data.sampler import DistributedBatchSampler

    sampler = DistributedBatchSampler(batches, rank=0, world_size=after, shuffle=True, seed=1)
    sampler.resume({"epoch": 1, "batches_done": done, "world_size": before})
    return list(sampler)


def test_sweep_trials_may_be_elastic_groups(tmp_path):
    import yaml

    from espnet3.orchestration.launch_spec import LaunchSpec
    from espnet3.sweep.runner import trial_launch
    from espnet3.sweep.spec import SweepError, SweepSpec

    sweep = yaml.safe_load(open("configs/sweep_tiny.yaml"))
    sweep.update(base=str(Path("configs/tiny_asr.yaml").resolve()), output_dir=str(tmp_path / "out"),
                 workers_per_trial="1-2")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    spec = SweepSpec.from_file(path)
    launch_spec = trial_launch(spec, LaunchSpec(sweep=path))
    assert spec.workers_per_trial == 2 and launch_spec.scaling == (1, 2)
    sweep["workers_per_trial"] = "2-1"
    path.write_text(yaml.safe_dump(sweep))
    with pytest.raises(SweepError, match="workers_per_trial.*write it as 1-2"):
        SweepSpec.from_file(path)


def test_a_checkpoint_written_for_a_notice_is_never_ranked_by_the_criteria():
    from espnet3.orchestration.criteria import parse_criteria

    (criterion,) = parse_criteria([["valid/loss", 3, "min"]])
    reports = [Report("checkpoint_a", {"valid/loss": 2.0}, 0),
               Report("checkpoint_b", {"valid/loss": -1.0, PREEMPTION_KEY: {"reason": "SIGTERM"}}, 1)]
    assert [r.name for r in criterion.best(reports)] == ["checkpoint_a"]


def test_tune_sees_validation_reports_only_not_the_checkpoints_written_for_a_notice(monkeypatch):
    """ASHA counts reports as iterations: a preemption's checkpoint must not be one."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from espnet3.sweep.trial import _tune_callback

    monkeypatch.setattr(TuneReportCallback, "__init__", lambda self: None)  # outside a Tune session
    callback = _tune_callback()
    forwarded = []
    callback._training_actor_item_queue = type("Queue", (), {"put": lambda self, item: forwarded.append(item)})()
    callback.after_report(None, [{"valid/loss": 1.0, "step": 4}], None)
    callback.after_report(None, [{"valid/loss": 1e308, "step": 6, PREEMPTION_KEY: {"reason": "node drain"}}], None)
    callback.after_report(None, [{"valid/loss": 0.5, "step": 8}], None)
    assert [m["step"] for m in forwarded] == [4, 8]


@pytest.mark.parametrize("room, decided", [(1, None), (2, None), (3, 3)])
def test_a_running_group_is_grown_but_never_shrunk_by_the_resize_monitor(monkeypatch, room, decided):
    """Fewer placeable workers than running ones means a node is draining (its ranks get the notice
    and checkpoint at the next step) or dead (the group fails): a resize there would restart from
    the last regular checkpoint and lose the steps since."""
    from types import SimpleNamespace

    from ray.train.v2.api.config import ScalingConfig
    from ray.train.v2._internal.execution.scaling_policy.scaling_policy import NoopDecision, ResizeDecision

    from espnet3.orchestration.elastic import drain_aware_scaling_policy

    policy = drain_aware_scaling_policy(ScalingConfig(num_workers=(1, 3)))
    monkeypatch.setattr(policy, "_maybe_send_resource_request", lambda: None)
    monkeypatch.setattr(policy, "_get_reserved_resources", lambda: {f"node{i}": {"CPU": 1.0} for i in range(room)})
    running = SimpleNamespace(start_time=float("-inf"), num_workers=2)
    decision = policy.make_decision_for_running_worker_group(running, None)
    if decided is None:
        assert isinstance(decision, NoopDecision)
    else:
        assert isinstance(decision, ResizeDecision) and decision.num_workers == decided


def test_local_checkpoint_copies_of_dead_workers_are_removed_and_live_ones_kept(tmp_path):
    """A worker killed before Ray's background upload finished leaves its checkpoint's local copy;
    the next worker on the node removes it, but never a copy a live process may still upload."""
    import subprocess
    import sys

    from espnet3.orchestration.callbacks import LOCAL_CHECKPOINT_PREFIX, remove_orphaned_checkpoints

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f"{LOCAL_CHECKPOINT_PREFIX}{dead.pid}-ab_c1"
    live = tmp_path / f"{LOCAL_CHECKPOINT_PREFIX}{os.getpid()}-xyz"
    other = tmp_path / "something-else-1"
    for path in (orphan, live, other):
        path.mkdir()
        (path / "checkpoint.ckpt").write_bytes(b"weights")
    assert remove_orphaned_checkpoints(str(tmp_path)) == [str(orphan)]
    assert not orphan.exists() and live.exists() and other.exists()
