"""The launcher's command-line options, parsed once into a validated spec."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

STAGES = ("collect_stats", "train", "infer", "measure", "pack")
# `evaluate` (espnet3's earlier name) runs both test-set stages.
STAGE_ALIASES = {"evaluate": ("infer", "measure")}
# A GPU step needs a few CPUs to decode, augment and collate the next batches; more than this
# rarely helps one GPU and leaves other runs on the node without cores.
GPU_WORKER_MAX_CPUS = 8


def parse_size(text: str, option: str) -> tuple[int, int]:
    """``N`` or ``MIN-MAX`` (an elastic worker group, Ray's ``num_workers=(min, max)``) as (min, max).

    Raises:
        ValueError: naming ``option`` and the accepted forms.
    """
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(text))
    if match is None:
        raise ValueError(f"{option} takes N or MIN-MAX (an elastic group, e.g. 2-8); got {text!r}.")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) is not None else low
    if low > high:
        raise ValueError(f"{option} {text}: MIN is above MAX; write it as {high}-{low}.")
    return low, high


def gpu_worker_cpus(num_gpus: int, cpu_count: int | None = None) -> float:
    """Default CPUs per GPU worker: this machine's CPUs shared among the GPUs, one left for the driver."""
    cpus = (cpu_count if cpu_count is not None else os.cpu_count() or 1) - 1
    return float(max(1, min(GPU_WORKER_MAX_CPUS, cpus // max(1, num_gpus))))


@dataclass
class LaunchSpec:
    """How to run a train.yaml on Ray.

    Attributes:
        config: the train.yaml path (``None`` for a sweep).
        sweep: the sweep file (docs/sweep_yaml.md) instead of a single train.yaml.
        num_gpus: N > 0 runs N workers with one GPU each (nccl); 0 runs CPU workers (gloo).
        num_workers: CPU workers when ``num_gpus == 0``.
        min_workers: the smallest worker group to train with (``--num-gpus MIN-MAX`` /
            ``--num-workers MIN-MAX``); ``None``: exactly :attr:`world_size`. ``num_gpus`` /
            ``num_workers`` then hold MAX, the size the data's batches are planned for
            (:attr:`world_size`).
        cpus_per_worker: CPUs reserved (and torch threads used) per worker; ``None``: 1 for a CPU
            worker, and for a GPU worker its share of this machine's CPUs (one kept for the driver,
            at most :data:`GPU_WORKER_MAX_CPUS`), which feeds its DataLoader processes.
        address: Ray cluster to join (``auto``, ``ray://host:10001``); ``None`` joins
            ``RAY_ADDRESS`` or starts a local cluster.
        stages: which stages to run, in order.
        resume: continue the run already in ``exp_dir`` instead of refusing to touch it.
        dry_run: validate and print the plan, start nothing.
        verbose: show tracebacks of configuration and training errors.
        overrides: ``a.b=value`` / ``+a.b=value`` config overrides.
        slurm: ``--slurm`` options (:class:`espnet3.orchestration.slurm.SlurmSpec`): submit the launch
            as a SLURM job instead of running it.
        argv: the command line without ``--slurm`` (what the SLURM job runs).
    """

    config: Path | None = None
    sweep: Path | None = None
    num_gpus: int = 0
    num_workers: int = 2
    min_workers: int | None = None
    cpus_per_worker: float | None = None
    address: str | None = None
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    resume: bool = False
    dry_run: bool = False
    verbose: bool = False
    overrides: list[str] = field(default_factory=list)
    slurm: object | None = None
    argv: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (self.config is None) == (self.sweep is None):
            raise ValueError("give exactly one of --config (a train.yaml) or --sweep (a sweep file).")
        if self.num_gpus < 0:
            raise ValueError(f"--num-gpus must be >= 0; got {self.num_gpus}.")
        if self.num_workers < 1:
            raise ValueError(f"--num-workers must be >= 1; got {self.num_workers}.")
        if self.min_workers is not None and not 1 <= self.min_workers <= self.world_size:
            option = "--num-gpus" if self.use_gpu else "--num-workers"
            raise ValueError(f"{option} {self.min_workers}-{self.world_size}: MIN must be between 1 and MAX.")
        if self.min_workers == self.world_size:
            self.min_workers = None
        if self.cpus_per_worker is None:
            self.cpus_per_worker = gpu_worker_cpus(self.num_gpus) if self.use_gpu else 1.0
        if self.cpus_per_worker <= 0:
            raise ValueError(f"--cpus-per-worker must be > 0; got {self.cpus_per_worker}.")
        stages = [t for s in self.stages for t in STAGE_ALIASES.get(s, (s,))]
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"Unknown stage(s) {unknown} in --stages; choose from {list(STAGES)} (or evaluate).")
        self.stages = [s for s in STAGES if s in stages]

    @property
    def use_gpu(self) -> bool:
        return self.num_gpus > 0

    @property
    def world_size(self) -> int:
        """The planned (largest) number of training workers."""
        return self.num_gpus if self.use_gpu else self.num_workers

    @property
    def elastic(self) -> bool:
        return self.min_workers is not None

    @property
    def scaling(self) -> int | tuple[int, int]:
        """Ray's ``ScalingConfig.num_workers``: N, or (MIN, MAX) for an elastic group."""
        return (self.min_workers, self.world_size) if self.elastic else self.world_size

    def size_text(self) -> str:
        return f"{self.min_workers}-{self.world_size}" if self.elastic else str(self.world_size)
