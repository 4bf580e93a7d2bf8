"""One Tune trial: the base config with the sampled values, fitted as a Ray Train run.

``Tuner(TorchTrainer)`` does not work with Train V2, so each trial is a function that
fits its own ``TorchTrainer`` and forwards rank 0's reports to Tune.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from espnet3.data.loader import LoaderSpec
from espnet3.data.plan import DataPlan
from espnet3.orchestration.launch_spec import LaunchSpec
from espnet3.sweep.space import Dimension, apply_params

# CPUs the trial function reserves besides its workers. It only waits on its Train
# controller (which reserves none), and a whole CPU per trial would stop two 1-worker
# trials from sharing a 2-core machine.
TRIAL_CPUS = 0.25


@dataclass(frozen=True)
class TrialPlan:
    """What every trial needs, shipped to the trial actors (so it is plain data).

    Attributes:
        base: the shared base config as a container, interpolations unresolved.
        space: the searched keys.
        source: the sweep file, for error messages.
        trials_dir: each trial's Ray Train run is ``trials_dir/<trial id>``.
        launch: workers, CPUs and GPUs of one trial's Ray Train run.
        config_dir: where a ``_target_`` model's code is imported from.
        data: the data plan prepared once for all trials (a trial may change its batching).
        storage_env: the launcher's object-storage settings (:func:`espnet3.storage.worker_env`).
        stop_board: the launcher's :class:`~espnet3.orchestration.preemption.StopBoard` (a SIGTERM
            has every running trial checkpoint at its next step).
    """

    base: dict
    space: tuple[Dimension, ...]
    source: Path
    trials_dir: Path
    launch: LaunchSpec
    config_dir: Path
    data: DataPlan
    storage_env: dict[str, str] | None = None
    stop_board: Any = None

    def trial_config(self, params: dict[str, Any], trial_id: str) -> DictConfig:
        return apply_params(
            OmegaConf.create(self.base), self.space, params, self.source,
            name=trial_id, exp_dir=str(self.trials_dir / trial_id),
        )


def run_trial(params: dict[str, Any], plan: TrialPlan) -> None:
    """One trial, in the Tune trial actor Ray put on any node: a Train run of the trial's config."""
    from espnet3.orchestration.ray_process import ray_process

    with ray_process(plan.storage_env):  # a trial actor on any node writes to the sweep's bucket
        _run_trial(params, plan)


def _run_trial(params: dict[str, Any], plan: TrialPlan) -> None:
    import threading

    import ray
    import ray.tune
    from ray.train import TrainingFailedError

    from espnet3.orchestration.failures import is_requested_stop
    from espnet3.config.save import save_config
    from espnet3.stages.train import build_torch_trainer

    # The Train run is named after the trial, so a restored sweep resumes the same run (from its
    # latest checkpoint: the one written at the launcher's SIGTERM, if there was one).
    trial_id = ray.tune.get_context().get_trial_id()
    cfg = plan.trial_config(params, trial_id)
    save_config(cfg, Path(cfg.exp_dir) / "train.yaml")
    data = replace(plan.data, loader=LoaderSpec.from_config(cfg.dataloader))
    board = plan.stop_board
    if board is not None:
        ray.get(board.enter.remote(trial_id))
    try:
        build_torch_trainer(cfg, plan.launch, plan.config_dir, data, callbacks=[_tune_callback()],
                            stop_board=board).fit()
    except TrainingFailedError as exc:
        if board is None or not is_requested_stop(exc):
            raise
        # Neither returned (TERMINATED) nor failed (ERROR): Tune saves this trial as unfinished when
        # the launcher interrupts the sweep, so `--resume` continues it.
        ray.get(board.stopped.remote(trial_id))
        threading.Event().wait()
    finally:
        if board is not None:
            board.leave.remote(trial_id)


def _tune_callback():
    """Ray's ``TuneReportCallback`` without the checkpoints written for a preemption notice: they carry
    no validation metrics, and ASHA must decide on the validation reports alone, without a gap."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from espnet3.orchestration.preemption import PREEMPTION_KEY

    class ValidationReports(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint) -> None:
            if metrics and PREEMPTION_KEY in metrics[0]:
                return
            super().after_report(run_context, metrics, checkpoint)

    return ValidationReports()


def trial_dirname(trial) -> str:
    """Tune's trial directory is the trial id (not its long parameter string)."""
    return trial.trial_id
