"""Join a Ray cluster, or start a local one that can actually schedule the run."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

from espnet3.orchestration.launch_spec import LaunchSpec


def local_cpus(spec: LaunchSpec, concurrent_runs: int = 1) -> int:
    """Logical CPUs for a local cluster running ``concurrent_runs`` runs of ``spec`` at once.

    Train V2's controller and the driver (or a Tune trial) need a CPU besides the
    workers; with ``num_cpus`` equal to the physical cores a 2-core machine never
    schedules two 1-CPU workers and Ray retries forever. Logical oversubscription is
    harmless: workers still run one torch thread per reserved CPU.
    """
    needed = math.ceil(concurrent_runs * (spec.world_size * spec.cpus_per_worker + 1))
    return max(os.cpu_count() or 1, needed)


# Ray Train turns print() in workers into log records, which its console handler and
# the worker's stdout then both forward to the driver: every line would appear twice.
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
# The State API's address for processes of a cluster espnet3 started (see connect()).
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"
# Where the launcher runs: workers resolve a config's relative paths from there too.
LAUNCH_DIR_ENV = "ESPNET3_LAUNCH_DIR"


def enter_launch_dir() -> None:
    """Make relative paths mean in a Ray worker what they mean to the launcher.

    ESPnet2 options that name files (``lang2utt``, ``spk2utt``, ``stats_file``, ``rir_scp``, ...)
    are written relative to the recipe directory, as in ESPnet2 recipes. Ray starts workers
    elsewhere; every espnet3 entry point in a Ray process calls this first (through
    :func:`espnet3.orchestration.ray_process.ray_process`). A launch directory that does not exist on the worker's node (a remote node without the shared path) is left alone:
    there the job's ``working_dir`` is the reference, as under ``ray job submit``.
    """
    launch_dir = os.environ.get(LAUNCH_DIR_ENV)
    if launch_dir and Path(launch_dir).is_dir() and Path.cwd() != Path(launch_dir):
        os.chdir(launch_dir)


# Ray starts workers at nice 15 by default: on a shared machine every other process
# then preempts training (measured: 0.8 of a core per worker, 0.80x the throughput of
# plain Lightning DDP). The workers are the reason this cluster exists.
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connect(
    spec: LaunchSpec, concurrent_runs: int = 1, recipe_code: Sequence[Path] = (), log_dir: Path | None = None
) -> bool:
    """Join ``--address``/``RAY_ADDRESS``, a live local cluster, or start one; True when started here.

    ``recipe_code`` (a recipe's ``src/`` package) travels to the workers of a remote
    cluster through the runtime environment; local workers import it in place. With
    ``log_dir``, Ray's driver-side notices and Train controller output go to a file there
    instead of the console (:mod:`espnet3.orchestration.console`).

    Every process of the run is told which cluster is its own (``RAY_ADDRESS``, or the API
    server's address for a new local cluster): Ray Train's placement-group cleaner queries the
    State API without an address, and with a second Ray instance on the machine it fails
    ("multiple active Ray instances"); a stopped sweep trial then leaks its placement group
    and the next trial waits forever.
    """
    import ray

    if ray.is_initialized():
        return False
    if log_dir is not None:
        from espnet3.orchestration.console import keep_ray_noise_in, route_controller_output

        keep_ray_noise_in(log_dir)
    started = _init(spec, concurrent_runs, recipe_code)
    if log_dir is not None:
        route_controller_output(log_dir)
    return started


def _init(spec: LaunchSpec, concurrent_runs: int, recipe_code: Sequence[Path]) -> bool:
    import ray

    address = spec.address or os.environ.get("RAY_ADDRESS")
    if not address and running_local_cluster() is not None:
        print("[espnet3] joining the Ray cluster already running on this machine", flush=True)
        address = running_local_cluster()
    if address == "auto":  # `ray job submit` entrypoints: name the cluster, not "whichever is running"
        from ray._private.services import canonicalize_bootstrap_address_or_die

        address = canonicalize_bootstrap_address_or_die("auto")
    own = {"RAY_ADDRESS": address} if address else {}
    os.environ.update(own)  # this driver's own State API calls
    if address:
        os.environ.pop(API_SERVER_ENV, None)  # left by a local cluster this process started before
    runtime_env: dict = {"env_vars": {**WORKER_ENV, LAUNCH_DIR_ENV: os.getcwd(), **own}}
    if spec.address and recipe_code:
        runtime_env["py_modules"] = [str(path) for path in recipe_code]
    kwargs = dict(
        runtime_env=runtime_env,
        logging_level=logging.WARNING,
        log_to_driver=True,
        configure_logging=True,
    )
    if address:
        announce_dashboard(ray.init(address=address, **kwargs))
        return False
    announce_dashboard(start_local_cluster(local_cpus(spec, concurrent_runs), **kwargs))
    return True


def announce_dashboard(context) -> None:
    """Where to watch the run: a local cluster's dashboard listens on a port chosen at start."""
    url = getattr(context, "dashboard_url", None)
    where = f"http://{url}" if url else "not running on this cluster (its head was started without it)"
    print(f"[espnet3] Ray dashboard: {where}", flush=True)


def start_local_cluster(num_cpus: int, runtime_env: dict | None = None, **kwargs):
    """Start a new single-machine cluster whose every process knows its State API address; return
    ``ray.init``'s context.

    ``address="local"`` always starts a new cluster: a bare ``ray.init()`` would try to join
    the cluster named in /tmp/ray/ray_current_cluster even when that one is long dead. The
    dashboard (the State API server) gets a port chosen here, exported before the raylet
    starts so that every worker inherits it (see :func:`connect`).
    """
    import ray

    port = _free_port()
    own = {API_SERVER_ENV: f"http://127.0.0.1:{port}"}
    os.environ.update(own)
    runtime_env = dict(runtime_env or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **own}
    return ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        runtime_env=runtime_env,
        _system_config=LOCAL_SYSTEM_CONFIG,
        **kwargs,
    )


def running_local_cluster() -> str | None:
    """The address of a live cluster started with `ray start` on this machine, if any.

    A cluster that died without `ray stop` leaves its address in Ray's pointer file.
    Ray's State API trusts that file, and Train's placement-group cleaner uses the
    State API: with a stale pointer it fails, placement groups of stopped Tune trials
    leak, and the next trial waits forever. So a dead pointer is removed, as
    `ray stop` would.
    """
    try:
        from ray._private.services import find_gcs_addresses
        from ray._private.utils import get_ray_address_file, read_ray_address

        address = read_ray_address(None)
        if not address:
            return None
        # Liveness from the process table: a TCP connect proves nothing where a proxy
        # accepts every connection.
        if address in find_gcs_addresses():
            return address
    except Exception:  # noqa: BLE001 - private Ray API; absence means "none found"
        return None
    Path(get_ray_address_file(None)).unlink(missing_ok=True)
    return None
