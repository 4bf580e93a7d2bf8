"""The launch's checks before Ray starts: the run directory, the GPUs, the strategy, the config.

Everything that can be checked is checked here, before a Ray worker starts: the config, the
launch options, the run directory and the model's own blocks (:mod:`.model_checks`). Each problem
is a :class:`~espnet3.errors.ConfigError` (or ``FileExistsError``) naming the key or file
and the fix; the launcher turns it into exit code 2.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from espnet3.orchestration.launch_spec import LaunchSpec


def check_run_dir(cfg: DictConfig, spec: LaunchSpec) -> None:
    from espnet3 import storage
    from espnet3.orchestration.provenance import RUN_FILE

    run_file = storage.home(Path(cfg.exp_dir) / RUN_FILE)
    if "train" in spec.stages and not spec.resume and storage.exists(run_file):
        raise FileExistsError(
            f"{storage.home(cfg.exp_dir)} already holds a run (see {run_file}). Ray Train would silently resume it: "
            "pass --resume to continue it, or start a new one with `name=<new name>` (or `exp_dir=...`)."
        )


def check_gpus(spec: LaunchSpec) -> None:
    """On a machine where espnet3 starts the cluster itself, ask for no more GPUs than it has.

    Ray would otherwise wait for them forever (a joined cluster may still add nodes: there the
    wait is bounded by ``timeouts.worker_start_s`` instead).
    """
    from espnet3.errors import ConfigError
    from espnet3.orchestration.cluster import running_local_cluster

    if not spec.use_gpu or spec.address or os.environ.get("RAY_ADDRESS") or running_local_cluster():
        return
    import torch

    available = torch.cuda.device_count()
    if spec.num_gpus > available:
        raise ConfigError(
            "--num-gpus", "the command line", f"asks for {spec.num_gpus} GPU worker(s), but this machine has "
            f"{available} GPU(s) and espnet3 would start a single-machine Ray cluster",
            f"use --num-gpus {available}" if available else "use --num-gpus 0 (CPU workers), or join a GPU "
            "cluster with --address",
        )


def check_workers(cfg: DictConfig, spec: LaunchSpec) -> None:
    """The training strategy against the launch options (FSDP needs GPU workers)."""
    from espnet3.errors import ConfigError
    from espnet3.orchestration.train_spec import TrainSpec

    try:
        TrainSpec.from_config(OmegaConf.to_container(cfg, resolve=True)).strategy.check_workers(spec.use_gpu)
    except ValueError as err:
        raise ConfigError.from_spec_error(err, spec.config) from None


def preflight(spec: LaunchSpec) -> DictConfig:
    from espnet3.config.gpu_batches import apply_gpu_batches
    from espnet3.config.loader import load_config
    from espnet3.driver.model_checks import check_config
    from espnet3.orchestration.preparation import absolutize, default_stages, localize
    from espnet3.utils.code_dir import config_code_dir, make_importable

    cfg = load_config(spec.config, spec.overrides)
    absolutize(cfg)
    localize(cfg, spec.config)
    for note in apply_gpu_batches(cfg, spec.use_gpu, spec.config):
        print(f"[espnet3] GPU batches: {note}", flush=True)
    spec.stages = spec.stages or default_stages(cfg)
    check_run_dir(cfg, spec)
    check_gpus(spec)
    make_importable(config_code_dir(spec.config))  # a model `_target_` in the recipe's src/
    check_config(OmegaConf.to_container(cfg, resolve=True), spec.config)
    if "train" in spec.stages:
        check_workers(cfg, spec)
    if "pack" in spec.stages and not cfg.get("task"):
        from espnet3.errors import ConfigError

        raise ConfigError(
            "task", spec.config, "the pack stage ships an ESPnet2 task model (config.yaml + .pth), and a "
            "`model._target_` model has no ESPnet2 task", "leave `pack` out of --stages",
        )
    if {"infer", "measure", "pack"} & set(spec.stages) or cfg.get("inference") or cfg.get("metrics"):
        # Checked now, not after training; a block written but not run this time is checked too,
        # so its typo is found before the run that needs it.
        evaluation_plan(cfg, spec.config)
    return cfg


def evaluation_plan(cfg: DictConfig, source: Path | None = None):
    from espnet3.driver.model_checks import check_evaluation

    return check_evaluation(OmegaConf.to_container(cfg, resolve=True), default_model(cfg), source)


def default_model(cfg: DictConfig) -> Path:
    """The model evaluation and packing use unless told otherwise: the first criterion's average."""
    from espnet3.orchestration.criteria import parse_criteria

    return Path(cfg.exp_dir) / parse_criteria(cfg.best_model_criterion)[0].averaged_name
