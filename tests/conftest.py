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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The endpoint of one local S3-compatible server (moto) for the session."""
    import s3_local as server

    proc, endpoint = server.start(tmp_path_factory.mktemp("moto") / "server.log")
    yield endpoint
    server.stop(proc)


@pytest.fixture
def s3_bucket(s3_server, tmp_path, monkeypatch):
    """A fresh bucket, with this process's environment pointing at the server (workers of the
    suite's Ray cluster read the same variables through the run's runtime environment) and a
    local-copy cache of the test's own."""
    import s3_local as server

    for key, value in server.environment(s3_server, tmp_path / "storage-cache").items():
        monkeypatch.setenv(key, value)
    return server.new_bucket(s3_server)
