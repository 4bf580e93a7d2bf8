"""Ports and nodes for `ray start` processes that tests start beside the suite's own cluster."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

RAY_BIN = Path(sys.executable).parent / "ray"


# Below the kernel's ephemeral range (where every outgoing connection takes its local port) and
# above Ray's worker ports (10002-19999): a port chosen here stays free until the daemon binds it.
# Ports from bind(0) come from the ephemeral range, where another cluster's connections can take
# one before a dashboard agent binds it: the likely cause (not proven) of two suite runs in which an
# agent never came up ("No available agent"; a raylet crashed waiting for the agent's port file).
_QUIET_PORTS = range(20000, 32768)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now, outside the ephemeral range (all bound
    at once, so none repeats)."""
    low = _ephemeral_low()
    quiet = [p for p in _QUIET_PORTS if p < low]
    candidates = random.sample(quiet, min(len(quiet), 50 * n)) if quiet else []
    socks: list[socket.socket] = []
    for port in candidates:
        if len(socks) == n:
            break
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        socks.append(sock)
    while len(socks) < n:  # no quiet range on this machine: the kernel's choice
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


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


def kill_node(node: subprocess.Popen) -> None:
    """What a lost machine looks like to Ray: every process of the node dies at once."""
    try:
        os.killpg(node.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    node.wait(timeout=60)
