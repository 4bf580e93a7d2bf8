"""The suite's own test-cluster helper: a joining node whose raylet gave up on a slow agent.

Ray 2.60's raylet waits a hard-coded 15 s for its dashboard agent's port files and aborts past
that; on a busy 2-core machine an agent took longer (net_utils.AGENT_TIMEOUT). Here the first
agent of a joining node is made slow on purpose (a ``sitecustomize`` on the node's PYTHONPATH
that sleeps 20 s in the agent's process, once), so its raylet really aborts, and ``join_node``
must start the node again and return it registered.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from net_utils import agent_timeouts, alive_nodes, join_node, kill_node, start_head, token_auth
from runs import user_env

SLOW_FIRST_AGENT = """
import os, sys, time
if sys.argv and sys.argv[0].endswith(os.path.join("dashboard", "agent.py")):
    marker = os.environ["SLOW_AGENT_MARKER"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(20)
"""


@pytest.mark.timeout(600)
def test_a_node_whose_raylet_timed_out_on_its_slow_agent_is_started_again(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_FIRST_AGENT)
    marker = tmp_path / "slowed"
    ray_tmp = Path(f"/tmp/e3join{os.getpid()}")
    env = user_env(RAY_TMPDIR=str(ray_tmp), **token_auth())
    head, address, _ = start_head(env, "--num-cpus=0")
    nodes = [head]
    try:
        node_env = {**env, "SLOW_AGENT_MARKER": str(marker),
                    "PYTHONPATH": os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)}
        nodes.append(join_node(node_env, address, 2, "--num-cpus=1", cpus=1))
        assert marker.exists(), "the first agent of the joining node was slowed"
        assert agent_timeouts(ray_tmp) == 1, "its raylet aborted waiting for the agent, once"
        alive = alive_nodes(address, env)
        assert len(alive) == 2 and sum(r.get("CPU", 0) for r in alive.values()) == 1
        assert nodes[1].poll() is None, "the node started again is the one returned, and it runs"
    finally:
        for node in reversed(nodes):
            kill_node(node)
        shutil.rmtree(ray_tmp, ignore_errors=True)
