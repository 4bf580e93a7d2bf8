"""The function every Ray Train worker runs: build, wrap, fit (resuming when Ray says so)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from espnet3.utils.quiet import silence_library_noise
from espnet3.orchestration.cluster import enter_launch_dir
from espnet3.orchestration.callbacks import CHECKPOINT_NAME, ConsoleProgress, FaultInjection, RayReportCallback
from espnet3.orchestration.console import WorkerConsole
from espnet3.orchestration.train_spec import TrainSpec
from espnet3.orchestration.worker_logs import output_to, rank_log, warnings_to_console


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    silence_library_noise()
    enter_launch_dir()
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    console = WorkerConsole(loop_config.get("console_queue"))
    with output_to(rank_log(loop_config["cfg"]["exp_dir"], rank)), warnings_to_console(console.to_driver, rank):
        _fit(loop_config, console)


def _fit(loop_config: dict[str, Any], console: WorkerConsole) -> None:
    import lightning as L
    import ray.train
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor
    from omegaconf import OmegaConf
    from ray.train.lightning import RayLightningEnvironment, prepare_trainer

    from espnet3.components.gpu import GPUOptions
    from espnet3.components.modeling.lightning_module import ESPnetLightningModule
    from espnet3.utils.task_utils import build_model

    cfg, plan = loop_config["cfg"], loop_config["data_plan"]
    spec: TrainSpec = loop_config["train_spec"]
    use_gpu, cpus = loop_config["use_gpu"], loop_config["cpus_per_worker"]
    torch.set_num_threads(max(1, int(cpus)))
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()

    gpu = GPUOptions.from_config(cfg.get("gpu")) if use_gpu else None
    if gpu is not None:
        gpu.apply_to_process()
    model = build_model(OmegaConf.create(cfg), loop_config["config_dir"], plan)
    if gpu is not None:
        model = gpu.prepare_model(model)
    module = ESPnetLightningModule(model, gpu.optimizer_configs(cfg) if gpu is not None else cfg)
    loader_options = dict(
        rank=rank,
        world_size=world_size,
        num_workers=plan.loader.workers_for(cpus, use_gpu),
        pin_memory=use_gpu if plan.loader.pin_memory is None else plan.loader.pin_memory,
    )
    train_loader = plan.dataloader("train", **loader_options)
    valid_loader = plan.dataloader("valid", **loader_options)

    callbacks = [RayReportCallback(spec.criteria), ConsoleProgress(spec.log_every_n_steps, console)]
    if spec.ema is not None:
        callbacks.append(spec.ema.callback())
    callbacks += [extension.build() for extension in spec.callbacks]
    if loop_config.get("fault_injection"):
        callbacks.append(FaultInjection.parse(loop_config["fault_injection"]))
    loggers = [extension.build() for extension in spec.loggers]
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    exp_dir = Path(cfg["exp_dir"])
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
        **spec.trainer,
    )
    trainer = prepare_trainer(trainer)
    checkpoint = ray.train.get_checkpoint()
    ckpt_path = os.path.join(checkpoint.to_directory(), CHECKPOINT_NAME) if checkpoint else None
    trainer.fit(module, train_loader, valid_loader, ckpt_path=ckpt_path)
