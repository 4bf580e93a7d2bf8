"""Ports and nodes for `ray start` processes that tests start beside the suite's own cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

RAY_BIN = Path(sys.executable).parent / "ray"


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (all bound at once, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
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
