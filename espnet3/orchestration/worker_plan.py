"""What a Ray Train worker is given: one frozen plan, parsed on the driver, instead of a dict of strings.

The driver has already parsed and checked everything here (the train spec, the data plan, the GPU
options); a worker only builds what cannot travel: the model, its Lightning module and the
Trainer, where they train.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from espnet3.components.gpu import GPUOptions
    from espnet3.data.plan import DataPlan
    from espnet3.orchestration.train_spec import TrainSpec


@dataclass(frozen=True)
class WorkerPlan:
    """One Train run's workers' plan (``train_loop_config["plan"]``).

    ``config`` is the resolved train.yaml, for the two consumers that take upstream's mapping: the
    model's builder (ESPnet2's task args, or a ``_target_`` block) and ``ESPnetLightningModule``
    (its ``optimizer``/``scheduler`` blocks, with the GPU options' fused optimizers applied).
    """

    config: Mapping[str, Any]
    train: TrainSpec
    data: DataPlan
    config_dir: str
    use_gpu: bool
    gpu: GPUOptions | None  # the `gpu:` block, on GPU workers
    max_workers: int  # an elastic group's largest size: the global batch it keeps
    cpus_per_worker: float
    storage_env: Mapping[str, str] | None = None
    console_queue: Any = None  # a ray.util.queue.Queue: rank 0's lines to the driver's console
    stop_board: Any = None  # the preemption board (an actor handle)
    stall_board: Any = None  # the stall watchdog's board (an actor handle)

    @property
    def exp_dir(self) -> str:
        return self.config["exp_dir"]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    def module_config(self) -> Mapping[str, Any]:
        """The mapping ``ESPnetLightningModule`` takes: the config, with fused optimizers on GPU."""
        return self.gpu.optimizer_configs(self.config) if self.gpu is not None else self.config
