import sys
from pathlib import Path

# The tests' helpers (tests/support: ddp_harness, toy_models, runs, ...) import as top-level
# modules, here and in spawned DDP ranks, which inherit sys.path. No test file imports another.
sys.path.insert(0, str(Path(__file__).parent / "support"))

import pytest

# The longest test files, longest first (seconds of one pytest process in fresh-clone suites of
# 2026-12-06: test_slurm.py 501-676, 328-508 with its run and sweep jobs side by side; then
# test_fault_tolerance.py and test_launch.py ~400 each, then 90-210 each). `make test` hands each
# of its 2 pytest processes a file at a time (`--dist loadfile`) in collection order, so a long file
# started last could keep one process busy for minutes while the other had nothing left. Longest
# first, the short files fill the end of both (longest-processing-time-first); only the order changes.
LONGEST_FIRST = (
    "test_slurm.py", "test_fault_tolerance.py", "test_launch.py", "test_spot_elastic.py", "test_benchmarks.py",
    "test_no_shared_filesystem.py", "test_object_storage.py", "test_sweep.py", "test_spot_sweep.py",
    "test_training_ecosystem.py", "test_recipe_families.py", "test_tasks.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


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
def digits(tmp_path_factory) -> Path:
    """The small spoken-digits corpus the end-to-end runs of ``configs/tiny_asr.yaml`` train on
    (60/12/12 utterances, seed 0), made once per test process."""
    from espnet3.corpora.digits import generate_corpus

    root = tmp_path_factory.mktemp("digits")
    generate_corpus(root, num_train=60, num_valid=12, num_test=12, seed=0, verbose=False)
    return root


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
