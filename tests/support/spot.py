"""A spot-node test cluster: its nodes' environment, a head without CPUs, and paced steps."""

from __future__ import annotations

from pathlib import Path

from net_utils import token_auth
from runs import user_env

DEADLINE_S = 20
# Steps paced to half a second (a user callback, loaded from the launch directory as a recipe's
# own code is), so that the notice, the reclaim and the new node all fall inside the run.
PACE = """
import time
import lightning as L


class Pace(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(0.5)
"""


def spot_env(ray_tmp: Path) -> dict[str, str]:
    """The environment of every process of a spot-test cluster (its nodes, the launcher, the CLI)."""
    return user_env(RAY_TMPDIR=str(ray_tmp), **token_auth(), RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S="1",
                    RAY_agent_register_timeout_ms="300000",  # see test_no_shared_filesystem: a busy suite's slow agents
                    # a dead node is noticed in about 3 s instead of 15 (GCS health checks), counted
                    # from 30 s after it registered. A raylet aborting on its slow agent is another
                    # matter: net_utils.AGENT_TIMEOUT.
                    RAY_health_check_initial_delay_ms="30000",
                    RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3")
