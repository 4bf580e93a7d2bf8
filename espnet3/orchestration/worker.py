"""The function every Ray Train worker runs: build, wrap, fit (resuming when Ray says so)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import traceback
from pathlib import Path
from typing import Any

from espnet3.orchestration.extensions import TENSORBOARD_DIR
from espnet3.orchestration.callbacks import (
    CHECKPOINT_NAME, SAMPLER_FILE, ConsoleProgress, RayReportCallback, ResumePosition,
)
from espnet3.orchestration.console import WorkerConsole
from espnet3.orchestration.counters import IterationCounts
from espnet3.orchestration.elastic import Attempt
from espnet3.orchestration.preemption import LocalNotice, PreemptionStop
from espnet3.orchestration.ray_process import ray_process
from espnet3.orchestration.train_spec import TrainSpec
from espnet3.orchestration.worker_logs import rank_log, warnings_to_console
from espnet3.orchestration.worker_plan import WorkerPlan

# The logger of ray.train.v2._internal.util.construct_user_exception_with_traceback.
RAY_TRAIN_FAILURE_LOGGER = "ray.train.v2._internal.util"


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train

    plan: WorkerPlan = loop_config["plan"]
    rank = ray.train.get_context().get_world_rank()
    console = WorkerConsole(plan.console_queue)
    # Ray Train logs a failed training function's traceback from the worker, which Ray forwards to
    # the driver's console; it belongs in the rank's log, and the driver prints the short reason.
    logging.getLogger(RAY_TRAIN_FAILURE_LOGGER).disabled = True
    log = rank_log(plan.exp_dir, rank)
    # A run in object storage: rank 0's TensorBoard events are uploaded while training, as the log is.
    tensorboard = [Path(plan.exp_dir, TENSORBOARD_DIR)] if rank == 0 else []
    with (ray_process(plan.storage_env, log, tensorboard),
          warnings_to_console(console.to_driver, rank)):
        try:
            plan.data.pull_files()
            _fit(plan, console)
        except PreemptionStop as stop:
            print(f"[espnet3] {stop}", flush=True)
            raise
        except BaseException:
            traceback.print_exc()
            raise


def _fit(worker: WorkerPlan, console: WorkerConsole) -> None:
    import lightning as L
    import ray.train
    import torch
    from omegaconf import OmegaConf

    from espnet3.components.modeling.lightning_module import ESPnetLightningModule
    from espnet3.utils.task_utils import build_model

    plan, spec, gpu = worker.data, worker.train, worker.gpu
    use_gpu, cpus = worker.use_gpu, worker.cpus_per_worker
    torch.set_num_threads(max(1, int(cpus)))
    L.seed_everything(worker.seed, workers=True, verbose=False)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()

    if gpu is not None:
        gpu.apply_to_process()
    model = build_model(OmegaConf.create(worker.config), worker.config_dir, plan)
    if gpu is not None:
        model = gpu.prepare_model(model)
    module = ESPnetLightningModule(model, worker.module_config())
    # Built from one seed, so every rank holds the same initial weights; trained with a stream of
    # its own (seed + rank), as ESPnet2's one process draws a new SpecAugment mask and dropout
    # pattern for every utterance of a batch. With one seed the ranks would mask and drop the same
    # positions in their halves of every global batch. Deterministic all the same.
    L.seed_everything(worker.seed + rank, workers=True, verbose=False)
    notice = LocalNotice(worker.stop_board)
    module.nan_guard.notice = notice
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext() as directory:
        # as_directory reads a checkpoint on a local or shared filesystem in place; to_directory
        # would copy it to /tmp/checkpoint_tmp_<id> on every resume and never delete the copy.
        sampler_file = Path(directory, SAMPLER_FILE) if directory else None
        resume = json.loads(sampler_file.read_text()) if sampler_file and sampler_file.is_file() else None
        loader_options = dict(
            rank=rank,
            world_size=world_size,
            num_workers=plan.loader.workers_for(cpus, use_gpu),
            pin_memory=use_gpu if plan.loader.pin_memory is None else plan.loader.pin_memory,
        )
        train_loader = plan.dataloader("train", **loader_options, resume=resume)
        valid_loader = plan.dataloader("valid", **loader_options)
        attempt = Attempt.start(spec, world_size, worker.max_workers, module.automatic_optimization, directory)
        if rank == 0:
            attempt.save(worker.exp_dir)
            if attempt.line():
                console(attempt.line())

        counts = IterationCounts()
        callbacks = [counts, RayReportCallback(spec.criteria, console, notice, counts),
                     ConsoleProgress(spec.log_every_n_steps, console, plan.preprocess.sample_rate(), worker.exp_dir),
                     ResumePosition(train_loader.batch_sampler)]
        if worker.stall_board is not None:
            from espnet3.orchestration.watchdog import StallReporter

            # First: its hooks run before any user callback that might never return.
            callbacks.insert(0, StallReporter(worker.stall_board, rank))
        trainer = _trainer(spec, module, callbacks, use_gpu, rank, Path(worker.exp_dir), attempt.accumulate_grad_batches)
        ckpt_path = os.path.join(directory, CHECKPOINT_NAME) if directory else None
        trainer.fit(module, train_loader, valid_loader, ckpt_path=ckpt_path)


def _trainer(spec: TrainSpec, module, callbacks: list, use_gpu: bool, rank: int, exp_dir: Path, accumulate: int):
    """The worker's ``lightning.Trainer``, with ``accumulate_grad_batches`` from the elastic batching rule."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor
    from ray.train.lightning import RayLightningEnvironment, prepare_trainer

    if spec.ema is not None:
        callbacks.append(spec.ema.callback())
    callbacks += [extension.build() for extension in spec.callbacks]
    loggers = [extension.build() for extension in spec.loggers]
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = L.Trainer(
        accelerator="gpu" if use_gpu else "cpu",
        devices="auto",
        strategy=spec.strategy.build(module.ddp_kwargs()),
        plugins=[RayLightningEnvironment()],
        callbacks=callbacks,
        logger=loggers or False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=rank == 0,
        use_distributed_sampler=False,
        default_root_dir=str(exp_dir),
        **{**spec.trainer, "accumulate_grad_batches": accumulate},
    )
    return prepare_trainer(trainer)
