"""The train stage: one Ray Train run of the config, then top-K averaging and ESPnet2 export."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from espnet3.data.plan import DataPlan
from espnet3.orchestration.launch_spec import LaunchSpec
from espnet3.utils.atomic import atomic_write_json

FAULT_INJECTION_ENV = "ESPNET3_FAULT_INJECTION"
WORKER_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
COLLECTIVE_TIMEOUT_ENV = "RAY_TRAIN_COLLECTIVE_TIMEOUT_S"


@dataclass(frozen=True)
class BestCriterion:
    """``best_model_criterion[0]``: the metric Ray keeps the top-K checkpoints by."""

    metric: str
    keep: int
    mode: str

    @classmethod
    def from_config(cls, cfg: DictConfig) -> BestCriterion:
        metric, keep, mode = cfg.best_model_criterion[0]
        return cls(str(metric), int(keep), str(mode))

    @property
    def averaged_name(self) -> str:
        """ESPnet's name for the averaged model, e.g. ``valid.loss.ave_3best.pth``."""
        return f"{self.metric.replace('/', '.')}.ave_{self.keep}best.pth"


@dataclass
class TrainOutcome:
    exp_dir: Path
    averaged_model: Path
    last_model: Path
    metrics: dict


def build_torch_trainer(
    cfg: DictConfig, spec: LaunchSpec, config_dir: Path, plan: DataPlan, callbacks: Sequence = ()
):
    """The Ray Train run of ``cfg`` over the data of ``plan``; ``callbacks`` (Ray ``UserCallback``s)
    let a Tune trial forward its reports to Tune."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    from espnet3.orchestration.failures import espnet_trainer_class
    from espnet3.orchestration.worker import train_loop_per_worker

    exp_dir = Path(cfg.exp_dir).resolve()
    criterion = BestCriterion.from_config(cfg)
    resources = {"CPU": spec.cpus_per_worker, **({"GPU": 1} if spec.use_gpu else {})}
    # Read by Ray Train's controller (propagated from the driver's environment): no run waits
    # forever for workers or for a peer in a collective.
    os.environ[WORKER_START_TIMEOUT_ENV] = str(cfg.timeouts.worker_start_s)
    os.environ[COLLECTIVE_TIMEOUT_ENV] = str(cfg.timeouts.collective_s)
    return espnet_trainer_class()(
        train_loop_per_worker,
        train_loop_config={
            "cfg": OmegaConf.to_container(cfg, resolve=True),
            "data_plan": plan,
            "config_dir": str(config_dir),
            "use_gpu": spec.use_gpu,
            "cpus_per_worker": spec.cpus_per_worker,
            "fault_injection": os.environ.get(FAULT_INJECTION_ENV),
        },
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo", timeout_s=int(cfg.timeouts.collective_s)),
        scaling_config=ScalingConfig(
            num_workers=spec.world_size, use_gpu=spec.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            # storage_path/name == exp_dir: Ray's checkpoints live beside espnet3's outputs.
            name=exp_dir.name,
            storage_path=str(exp_dir.parent),
            failure_config=FailureConfig(max_failures=int(cfg.max_failures)),
            # Ray Train's per-report INFO lines would drown espnet3's progress lines.
            logging_config=LoggingConfig(log_level="WARNING"),
            checkpoint_config=CheckpointConfig(
                num_to_keep=criterion.keep,
                checkpoint_score_attribute=criterion.metric,
                checkpoint_score_order=criterion.mode,
            ),
            callbacks=list(callbacks),
        ),
    )


def run_train(cfg: DictConfig, spec: LaunchSpec, config_dir: Path, plan: DataPlan) -> TrainOutcome:
    from espnet3.export import average_checkpoints, write_espnet2_config
    from espnet3.orchestration.callbacks import CHECKPOINT_NAME

    exp_dir = Path(cfg.exp_dir).resolve()
    criterion = BestCriterion.from_config(cfg)
    result = build_torch_trainer(cfg, spec, config_dir, plan).fit()
    scored = [(ckpt, m) for ckpt, m in result.best_checkpoints if criterion.metric in m]
    if not scored:
        raise RuntimeError(
            f"No checkpoint reported `{criterion.metric}` (best_model_criterion); reported metrics: "
            f"{sorted(result.metrics or {})}. Fix `best_model_criterion` in the train.yaml."
        )
    scored.sort(key=lambda item: item[1][criterion.metric], reverse=criterion.mode == "max")
    best = [Path(ckpt.to_directory()) / CHECKPOINT_NAME for ckpt, _ in scored[: criterion.keep]]
    averaged = average_checkpoints(best, exp_dir / criterion.averaged_name)
    last = average_checkpoints([Path(result.checkpoint.to_directory()) / CHECKPOINT_NAME], exp_dir / "last.pth")
    if plan.preprocess.task is not None:
        write_espnet2_config(plan.preprocess, exp_dir, seed=int(cfg.seed))
    atomic_write_json(exp_dir / "train_result.json", {
        "metrics": dict(result.metrics or {}),
        "best_checkpoints": [{"path": ckpt.path, criterion.metric: m[criterion.metric]} for ckpt, m in scored],
        "averaged_model": str(averaged),
        "last_model": str(last),
    })
    print(f"[espnet3] averaged {len(best)} best checkpoints by {criterion.metric} -> {averaged}")
    return TrainOutcome(exp_dir=exp_dir, averaged_model=averaged, last_model=last, metrics=dict(result.metrics or {}))
