import sys
from pathlib import Path

# Helper modules (ddp_harness, toy_models, data_utils) live beside the tests and must
# also import in spawned DDP ranks, which inherit sys.path.
sys.path.insert(0, str(Path(__file__).parent))

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every test that needs one (each start costs seconds)."""
    import ray

    if not ray.is_initialized():
        from espnet3.orchestration.cluster import running_local_cluster, start_local_cluster

        running_local_cluster()  # drops a dead cluster's pointer file
        start_local_cluster(4, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
