"""The train stage: one Ray Train run of the config, then each criterion's top-K average and ESPnet2 export."""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from espnet3.data.plan import DataPlan
from espnet3.orchestration.launch_spec import LaunchSpec
from espnet3.orchestration.train_spec import TrainSpec
from espnet3 import storage
from espnet3.storage import atomic_write_json

WORKER_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
COLLECTIVE_TIMEOUT_ENV = "RAY_TRAIN_COLLECTIVE_TIMEOUT_S"


@dataclass
class TrainOutcome:
    exp_dir: Path
    averaged_models: dict[str, Path]
    last_model: Path
    metrics: dict


def build_torch_trainer(
    cfg: DictConfig, spec: LaunchSpec, config_dir: Path, plan: DataPlan, callbacks: Sequence = (),
    console_queue=None, stop_board=None, stall_board=None,
):
    """The Ray Train run of ``cfg`` over the data of ``plan``; ``callbacks`` (Ray ``UserCallback``s)
    let a Tune trial forward its reports to Tune, ``console_queue`` receives the console lines
    (:class:`espnet3.orchestration.console.DriverConsole`), ``stop_board`` the launcher's request to
    checkpoint and stop (:class:`espnet3.orchestration.preemption.StopBoard`), ``stall_board`` the
    ranks' progress for the stall watchdog (:mod:`espnet3.orchestration.watchdog`)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    from espnet3.components.gpu import GPUOptions
    from espnet3.orchestration.failures import espnet_trainer_class
    from espnet3.orchestration.pruning import CheckpointPruner
    from espnet3.orchestration.worker import train_loop_per_worker
    from espnet3.orchestration.worker_plan import WorkerPlan

    exp_dir = Path(cfg.exp_dir).resolve()
    run_home = storage.home(exp_dir)
    # storage_path/name == exp_dir: Ray's checkpoints live beside espnet3's outputs, in the
    # bucket when exp_dir is a URI (uploaded by Ray from each worker, through the same filesystem).
    filesystem, run_path = storage.filesystem(run_home)
    container = OmegaConf.to_container(cfg, resolve=True)
    train = TrainSpec.from_config(container)
    resources = {"CPU": spec.cpus_per_worker, **({"GPU": 1} if spec.use_gpu else {})}
    # Read by Ray Train's controller (propagated from the driver's environment): no run waits
    # forever for workers or for a peer in a collective.
    os.environ[WORKER_START_TIMEOUT_ENV] = str(cfg.timeouts.worker_start_s)
    os.environ[COLLECTIVE_TIMEOUT_ENV] = str(cfg.timeouts.collective_s)
    from espnet3.orchestration.watchdog import enable_nccl_hang_detector

    enable_nccl_hang_detector(spec.use_gpu)
    return espnet_trainer_class()(
        train_loop_per_worker,
        train_loop_config={"plan": WorkerPlan(
            config=container, train=train, data=plan, config_dir=str(config_dir), use_gpu=spec.use_gpu,
            gpu=GPUOptions.from_config(container.get("gpu")) if spec.use_gpu else None,
            max_workers=spec.world_size, cpus_per_worker=spec.cpus_per_worker, storage_env=storage.worker_env(),
            console_queue=console_queue, stop_board=stop_board, stall_board=stall_board,
        )},
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo", timeout_s=int(cfg.timeouts.collective_s)),
        scaling_config=ScalingConfig(
            num_workers=spec.scaling, use_gpu=spec.use_gpu, resources_per_worker=resources,
            **({"elastic_resize_monitor_interval_s": float(cfg.elastic_resize_monitor_interval_s)}
               if spec.elastic else {}),
        ),
        run_config=RunConfig(
            name=os.path.basename(run_path),
            storage_path=os.path.dirname(run_path),
            storage_filesystem=filesystem if storage.is_uri(run_home) else None,
            # A preemption (a node's drain notice) is Ray's own budget, never `max_failures`.
            failure_config=FailureConfig(max_failures=int(cfg.max_failures),
                                         max_preemption_failures=int(cfg.max_preemption_failures)),
            # Ray Train's per-report INFO lines would drown espnet3's progress lines.
            logging_config=LoggingConfig(log_level="WARNING"),
            # Ray keeps every checkpoint (it ranks by one metric only); CheckpointPruner keeps
            # the top-K of every criterion. The first one orders Result.best_checkpoints.
            checkpoint_config=CheckpointConfig(
                num_to_keep=None,
                checkpoint_score_attribute=train.default_criterion.metric,
                checkpoint_score_order=train.default_criterion.mode,
            ),
            callbacks=[CheckpointPruner(run_home, train.criteria), *callbacks],
        ),
    )


def run_train(cfg: DictConfig, spec: LaunchSpec, config_dir: Path, plan: DataPlan, stop_board=None,
              status=None) -> TrainOutcome:
    from espnet3.orchestration.console import LOG_DIR, DriverConsole

    exp_dir = Path(cfg.exp_dir).resolve()
    train = TrainSpec.from_config(OmegaConf.to_container(cfg, resolve=True))
    print(f"[espnet3] worker output -> {storage.home(exp_dir / LOG_DIR)}/rank*.log", flush=True)
    from espnet3.orchestration.preemption import disarm

    try:
        from espnet3.orchestration.watchdog import StallMonitor, start_board

        board = start_board()
        with DriverConsole() as console, StallMonitor(board, exp_dir, cfg.timeouts.get("stall_s"), status):
            result = build_torch_trainer(cfg, spec, config_dir, plan, console_queue=console.queue,
                                         stop_board=stop_board, stall_board=board).fit()
    finally:
        disarm()  # a SIGTERM from here on stops at once
    outcome = export_run(exp_dir, train, dict(result.metrics or {}))
    if plan.preprocess.task is not None:
        from espnet3.export import write_espnet2_config

        write_espnet2_config(plan.preprocess, exp_dir, seed=int(cfg.seed))
    return outcome


def export_run(exp_dir: Path, train: TrainSpec, metrics: dict) -> TrainOutcome:
    """Average each criterion's kept checkpoints and write ``last.pth`` (and ``ema.pth``) and
    ``train_result.json``.

    Raises:
        RuntimeError: when no kept checkpoint reported a criterion's metric.
    """
    from espnet3.components.ema import EMA_MODEL_FILE
    from espnet3.export import average_checkpoints
    from espnet3.orchestration.callbacks import CHECKPOINT_NAME
    from espnet3.orchestration.elastic import history, read_attempts
    from espnet3.orchestration.slurm import read_requeues
    from espnet3.orchestration.pruning import read_reports

    run_home = storage.home(exp_dir)
    reports = [r for r in read_reports(run_home) if storage.is_file(storage.join(run_home, r.name, CHECKPOINT_NAME))]
    if not reports:
        raise RuntimeError(f"No checkpoint was reported in {run_home}; did training run a validation?")
    weights = "ema" if train.ema is not None and train.ema.exported else "trained"
    averaged, summary = {}, []
    for criterion in train.criteria:
        best = criterion.best(reports)
        if not best:
            raise RuntimeError(
                f"No checkpoint reported `{criterion.metric}` (best_model_criterion); reported metrics: "
                f"{sorted(reports[-1].metrics)}. Fix `best_model_criterion` in the train.yaml."
            )
        path = average_checkpoints([_checkpoint(exp_dir, r) for r in best],
                                   exp_dir / criterion.averaged_name, weights=weights)
        averaged[criterion.averaged_name] = path
        summary.append({
            "criterion": [criterion.metric, criterion.keep, criterion.mode],
            "averaged_model": storage.home(path),
            "checkpoints": [{"path": storage.join(run_home, r.name), criterion.metric: r.metrics[criterion.metric],
                             "step": r.metrics.get("step")} for r in best],
        })
        print(f"[espnet3] averaged {len(best)} best checkpoints by {criterion.metric} ({criterion.mode}) -> "
              f"{storage.home(path)}", flush=True)
    latest = _checkpoint(exp_dir, reports[-1])
    last = average_checkpoints([latest], exp_dir / "last.pth", weights=weights)
    _write_lightning_names(exp_dir, train, reports, last, weights)
    result = {
        "metrics": metrics,
        "weights": weights,
        "criteria": summary,
        "averaged_model": summary[0]["averaged_model"],
        "last_model": storage.home(last),
        **history(read_attempts(exp_dir), read_reports(run_home)),
        "requeues": read_requeues(exp_dir),
    }
    if train.ema is not None and not train.ema.exported:
        result["ema_model"] = storage.home(average_checkpoints([latest], exp_dir / EMA_MODEL_FILE, weights="ema"))
    atomic_write_json(exp_dir / "train_result.json", result)
    if storage.uri_of(exp_dir) is not None:  # the downloaded checkpoints: the bucket keeps them
        for report in reports:
            shutil.rmtree(exp_dir / report.name, ignore_errors=True)
    return TrainOutcome(exp_dir=exp_dir, averaged_models=averaged, last_model=last, metrics=metrics)


# Upstream ESPnet3's checkpoint names (its ModelCheckpoint callbacks'), which egs3 inference configs name.
LIGHTNING_NAME = "epoch{epoch}_step{step}_{metric}.ckpt"
LAST_CKPT = "last.ckpt"


def _write_lightning_names(exp_dir: Path, train: TrainSpec, reports, last: Path, weights: str) -> None:
    """The kept checkpoints' weights under upstream ESPnet3's names: each criterion's top-K as
    ``epoch{E}_step{S}_{metric}.ckpt`` and the latest as ``last.ckpt``, so an egs3 inference config's
    ``asr_model_file: ${exp_dir}/epoch0_step1_valid.loss.ckpt`` decodes the model it means. They hold
    the model's state dict as ESPnet2's inference loads it (a Lightning checkpoint's ``model.``
    prefixed keys would load nothing there: ESPnet2 loads non-strictly); names that left the top-K
    since the last export are removed."""
    from espnet3.export import average_checkpoints

    wanted = {}
    for criterion in train.criteria:
        for report in criterion.best(reports):
            name = LIGHTNING_NAME.format(epoch=report.metrics.get("epoch"), step=report.metrics.get("step"),
                                         metric=criterion.metric.replace("/", "."))
            wanted[name] = report
    pattern = LIGHTNING_NAME.format(epoch="*", step="*", metric="*")
    for name in storage.listdir(storage.home(exp_dir)):
        if fnmatch.fnmatch(name, pattern) and name not in wanted:
            storage.delete(storage.join(storage.home(exp_dir), name))
            (exp_dir / name).unlink(missing_ok=True)
    for name, report in wanted.items():
        average_checkpoints([_checkpoint(exp_dir, report)], exp_dir / name, weights=weights)
    storage.atomic_save(exp_dir / LAST_CKPT, lambda tmp: shutil.copyfile(last, tmp))  # last.pth's weights


def _checkpoint(exp_dir: Path, report) -> Path:
    """A reported checkpoint's file on this machine (downloaded from the bucket when the run lives there)."""
    from espnet3.orchestration.callbacks import CHECKPOINT_NAME

    return storage.pull(exp_dir / report.name / CHECKPOINT_NAME)
