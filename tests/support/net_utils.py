"""Ports and nodes for `ray start` processes that tests start beside the suite's own cluster."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

RAY_BIN = Path(sys.executable).parent / "ray"


# Below the kernel's ephemeral range (where every outgoing connection takes its local port) and
# above Ray's worker ports (10002-19999): a port chosen here stays free until the daemon binds it.
# Ports from bind(0) come from the ephemeral range, where another cluster's connections can take
# one before a dashboard agent binds it.
_QUIET_PORTS = range(20000, 32768)
# Every port handed out to a test node on this machine, with the process that took it: a port is
# free to bind from the moment it is chosen until its daemon binds it, and two `ray start` of two
# test processes at the same moment picked the same one (the loser's raylet aborted with "bind:
# Address already in use" and its `ray start` said "The current node timed out during startup").
# Handed out under a lock, a port is never handed out again while the process that took it lives.
_REGISTRY = Path(tempfile.gettempdir()) / "espnet3-test-ports.json"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return True


@contextlib.contextmanager
def _port_registry():
    """The machine's ``port -> pid`` of ports handed out to live test processes, held under an
    exclusive lock and written back on exit."""
    with open(_REGISTRY.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            taken = json.loads(_REGISTRY.read_text()) if _REGISTRY.is_file() else {}
        except (OSError, ValueError):
            taken = {}
        taken = {port: pid for port, pid in taken.items() if _alive(pid)}
        yield taken
        tmp = _REGISTRY.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(taken))
        os.replace(tmp, _REGISTRY)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now, outside the ephemeral range, and not
    handed out to any other live test process of this machine (nor before to this one)."""
    low = _ephemeral_low()
    quiet = [p for p in _QUIET_PORTS if p < low]
    if not quiet:
        raise RuntimeError(f"no port between {_QUIET_PORTS.start} and the ephemeral range (from {low}) on this "
                           "machine: widen net.ipv4.ip_local_port_range's lower bound")
    ports: list[int] = []
    with _port_registry() as taken:
        for port in random.sample(quiet, len(quiet)):
            if len(ports) == n:
                break
            if str(port) in taken:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            ports.append(port)
        if len(ports) < n:
            raise RuntimeError(f"only {len(ports)} of {n} ports free between {_QUIET_PORTS.start} and {low}")
        taken.update({str(port): os.getpid() for port in ports})
    return ports


def token_auth() -> dict[str, str]:
    """Token authentication with a token of the cluster's own, in the environment of every process
    that starts or joins it. ``ray get-auth-token --generate`` writes ``~/.ray/auth_token`` once for
    every cluster on the machine: two tests generating it at once on a fresh machine can leave a
    head and its later nodes or drivers with different tokens."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}


def ray_start(env: dict[str, str], *args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """`ray start --block` on 127.0.0.1 with ports of its own, in its own process group
    (``prefix``: a command it runs under, e.g. ``unshare --mount ...``)."""
    node_manager, object_manager, agent, agent_grpc, env_agent, metrics = free_ports(6)
    return subprocess.Popen(
        [*prefix, str(RAY_BIN), "start", "--block", "--node-ip-address=127.0.0.1",
         f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}", "--disable-usage-stats", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def start_head(env: dict[str, str], *args: str) -> tuple[subprocess.Popen, str, int]:
    """`ray start --head --block` on 127.0.0.1 with a dashboard and ports of its own (``args``:
    more options, e.g. ``--num-cpus=0``): the node, its address and its dashboard's port."""
    gcs, dashboard, client = free_ports(3)
    head = ray_start(env, "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
                     f"--ray-client-server-port={client}", "--include-dashboard=true", *args)
    return head, f"127.0.0.1:{gcs}", dashboard


def ray_logs_tail(ray_tmp: Path, lines: int = 15) -> str:
    """What a failed start shows: the last lines of the agents', raylets', GCS's and dashboard's
    logs of the clusters started with ``RAY_TMPDIR=ray_tmp`` (their nodes share one session directory)."""
    parts = []
    logs = ray_tmp / "ray" / "session_latest" / "logs"
    # A raylet that aborted says why once, far above the stack trace at its log's end.
    for log in sorted(logs.glob("raylet*")) if logs.is_dir() else []:
        fatal = [line for line in log.read_text(errors="replace").splitlines()
                 if any(mark in line for mark in ("Check failed", " F ", "marked dead", "is dead", "FATAL"))]
        if fatal:
            parts.append(f"\n--- {log}: why it ended\n" + "\n".join(fatal[:5]))
    names = ("dashboard_agent", "raylet", "dashboard_JobHead", "gcs_server", "runtime_env_agent")
    for log in sorted(logs.glob("*")) if logs.is_dir() else []:
        if log.is_file() and log.name.startswith(names):
            tail = [line for line in log.read_text(errors="replace").splitlines()
                    if not line.startswith("[state-dump]")][-lines:]
            parts.append(f"\n--- {log}\n" + "\n".join(tail))
    return "".join(parts) or f"\n(no Ray logs under {ray_tmp})"


def kill_node(node: subprocess.Popen) -> None:
    """What a lost machine looks like to Ray: every process of the node dies at once."""
    try:
        os.killpg(node.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    node.wait(timeout=60)


NODES_PY = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps({n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}))
"""


def alive_nodes(address: str, env: dict[str, str]) -> dict[str, dict]:
    """node id -> resources of every live node of the cluster at ``address``."""
    out = subprocess.run([sys.executable, "-c", NODES_PY, address], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def wait_for_nodes(address: str, env: dict[str, str], count: int, cpus: float = 0, timeout: float = 180,
                   node: subprocess.Popen | None = None) -> None:
    """Until ``count`` nodes with ``cpus`` CPUs in all are alive: a launch against a cluster whose
    nodes are still registering (a busy suite) failed in Ray's start-up, not in espnet3 (the
    driver's GCS node lookup, a raylet waiting for its agent). A probe that fails is retried.
    ``node``: a `ray start --block` being waited for; its end ends the wait (NodeEnded)."""
    deadline = time.monotonic() + timeout
    seen: object = None
    while time.monotonic() < deadline:
        if node is not None and node.poll() is not None:
            raise NodeEnded(f"`ray start` ended with exit code {node.returncode} before its node registered")
        try:
            nodes = alive_nodes(address, env)
        except (subprocess.SubprocessError, ValueError, IndexError) as exc:
            seen = exc
        else:
            seen = nodes
            if len(nodes) >= count and sum(r.get("CPU", 0) for r in nodes.values()) >= cpus:
                return
        time.sleep(1)
    raise TimeoutError(f"{count} nodes with {cpus} CPUs did not come up within {timeout:.0f} s; last seen: {seen}")


class NodeEnded(TimeoutError):
    """A `ray start --block` ended (one of its node's processes died) before the node registered."""


# Ray 2.60's raylet waits a hard-coded 15 s for its dashboard agent's port file and aborts
# ("Timed out waiting for file .../dashboard_agent_listen_port_<node>"): no RAY_ variable or
# `ray start` flag changes it (ray-project/ray#65983). A busy 2-core suite's agent can take longer
# to import its modules: seen in 2 of 3 fresh-clone suites, always while joining a node, before
# the behaviour under test. Such a node is started again; any other ending fails the test.
AGENT_TIMEOUT = "Timed out waiting for file"
JOIN_ATTEMPTS = 3


def agent_timeouts(ray_tmp: Path) -> int:
    """How many raylets of the clusters under ``ray_tmp`` aborted waiting for their agent."""
    logs = ray_tmp / "ray" / "session_latest" / "logs"
    return sum(AGENT_TIMEOUT in log.read_text(errors="replace")
               for log in (logs.glob("raylet*.out") if logs.is_dir() else ()))


def join_node(env: dict[str, str], address: str, count: int, *args: str, cpus: float = 0,
              prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """`ray start --address` for one more node, returned once the cluster shows ``count`` nodes
    (``cpus`` CPUs in all); a node not seen within 180 s fails the test with the cluster's Ray logs.
    A node whose raylet gave up on its slow agent (see AGENT_TIMEOUT) is started again, at most
    JOIN_ATTEMPTS times in all."""
    ray_tmp = Path(env["RAY_TMPDIR"]) if "RAY_TMPDIR" in env else None
    for attempt in range(1, JOIN_ATTEMPTS + 1):
        before = agent_timeouts(ray_tmp) if ray_tmp else 0
        node = ray_start(env, f"--address={address}", *args, prefix=prefix)
        try:
            wait_for_nodes(address, env, count, cpus=cpus, timeout=180, node=node)
            return node
        except TimeoutError as exc:
            kill_node(node)
            if (isinstance(exc, NodeEnded) and ray_tmp and attempt < JOIN_ATTEMPTS
                    and agent_timeouts(ray_tmp) > before):
                print(f"join_node: attempt {attempt}: the raylet timed out waiting for its agent; starting it again")
                continue
            raise TimeoutError(f"{exc}\n{ray_logs_tail(ray_tmp) if ray_tmp else ''}") from None
