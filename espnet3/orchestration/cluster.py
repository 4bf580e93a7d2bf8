"""Join a Ray cluster, or start a local one that can actually schedule the run."""

from __future__ import annotations

import logging
import math
import os

from espnet3.orchestration.launch_spec import LaunchSpec


def local_cpus(spec: LaunchSpec) -> int:
    """Logical CPUs for a local cluster.

    Train V2's controller and the driver need a CPU besides the workers; with
    ``num_cpus`` equal to the physical cores a 2-core machine never schedules two
    1-CPU workers and Ray retries forever. Logical oversubscription is harmless:
    workers still run one torch thread per reserved CPU.
    """
    needed = math.ceil(spec.world_size * spec.cpus_per_worker) + 1
    return max(os.cpu_count() or 1, needed)


# Ray Train turns print() in workers into log records, which its console handler and
# the worker's stdout then both forward to the driver: every line would appear twice.
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def connect(spec: LaunchSpec) -> None:
    import ray

    if ray.is_initialized():
        return
    address = spec.address or os.environ.get("RAY_ADDRESS")
    kwargs = dict(
        runtime_env={"env_vars": WORKER_ENV},
        logging_level=logging.WARNING,
        log_to_driver=True,
        configure_logging=True,
    )
    if address:
        ray.init(address=address, **kwargs)
        return
    ray.init(num_cpus=local_cpus(spec), **kwargs)
