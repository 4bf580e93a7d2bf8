"""The function every Ray Train worker runs: build, wrap, fit (resuming when Ray says so)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from espnet3.utils.quiet import silence_library_noise
from espnet3.orchestration.cluster import enter_launch_dir
from espnet3.orchestration.callbacks import CHECKPOINT_NAME, ConsoleProgress, FaultInjection, RayReportCallback

# Trainer options espnet3 sets itself; a train.yaml that sets them would fight Ray.
RESERVED_TRAINER_KEYS = (
    "strategy",
    "devices",
    "num_nodes",
    "accelerator",
    "plugins",
    "callbacks",
    "logger",
    "enable_checkpointing",
    "use_distributed_sampler",
    "default_root_dir",
)


def _loggers(cfg: dict, exp_dir: Path) -> list:
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    logging_cfg = cfg.get("logging") or {}
    loggers = []
    if logging_cfg.get("tensorboard", True):
        loggers.append(TensorBoardLogger(save_dir=str(exp_dir), name="tensorboard", version=""))
    wandb_cfg = logging_cfg.get("wandb")
    if wandb_cfg:
        loggers.append(WandbLogger(save_dir=str(exp_dir), name=cfg["name"], **dict(wandb_cfg)))
    return loggers


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    silence_library_noise()
    enter_launch_dir()
    import lightning as L
    import ray.train
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor
    from omegaconf import OmegaConf
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    from espnet3.components.modeling.lightning_module import ESPnetLightningModule
    from espnet3.utils.task_utils import build_model

    cfg, plan = loop_config["cfg"], loop_config["data_plan"]
    use_gpu, cpus = loop_config["use_gpu"], loop_config["cpus_per_worker"]
    torch.set_num_threads(max(1, int(cpus)))
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()

    model = build_model(OmegaConf.create(cfg), loop_config["config_dir"], plan)
    module = ESPnetLightningModule(model, cfg)
    loader_options = dict(
        rank=rank,
        world_size=world_size,
        num_workers=plan.loader.workers_for(cpus, use_gpu),
        pin_memory=use_gpu if plan.loader.pin_memory is None else plan.loader.pin_memory,
    )
    train_loader = plan.dataloader("train", **loader_options)
    valid_loader = plan.dataloader("valid", **loader_options)

    trainer_cfg = {k: v for k, v in (cfg.get("trainer") or {}).items() if k not in RESERVED_TRAINER_KEYS}
    every = cfg.get("report_every_n_steps")
    if every:
        trainer_cfg.update(val_check_interval=int(every), check_val_every_n_epoch=None)
    callbacks = [RayReportCallback(), ConsoleProgress(int(trainer_cfg.get("log_every_n_steps", 50)))]
    if loop_config.get("fault_injection"):
        callbacks.append(FaultInjection.parse(loop_config["fault_injection"]))
    exp_dir = Path(cfg["exp_dir"])
    loggers = _loggers(cfg, exp_dir)
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = L.Trainer(
        accelerator="gpu" if use_gpu else "cpu",
        devices="auto",
        strategy=RayDDPStrategy(**module.ddp_kwargs()),
        plugins=[RayLightningEnvironment()],
        callbacks=callbacks,
        logger=loggers or False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=rank == 0,
        use_distributed_sampler=False,
        default_root_dir=str(exp_dir),
        **trainer_cfg,
    )
    trainer = prepare_trainer(trainer)
    checkpoint = ray.train.get_checkpoint()
    ckpt_path = os.path.join(checkpoint.to_directory(), CHECKPOINT_NAME) if checkpoint else None
    trainer.fit(module, train_loader, valid_loader, ckpt_path=ckpt_path)
