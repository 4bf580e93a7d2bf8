"""Which worker failures a restart can cure (:class:`RetryCurablePolicy`), with Ray's own error types."""

from __future__ import annotations

import pytest
from ray.exceptions import ActorDiedError
from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError
from ray.train.v2._internal.execution.failure_handling import FailureDecision
from ray.train.v2.api.config import FailureConfig
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

from espnet3.components.modeling.nan_guard import NaNLimitError
from espnet3.orchestration.failures import RetryCurablePolicy


def worker_error(*errors: BaseException) -> WorkerGroupError:
    return WorkerGroupError("workers failed", dict(enumerate(errors)))


@pytest.mark.parametrize(
    "error",
    [
        NaNLimitError("3 consecutive batches had a non-finite loss"),
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x16 and 32x8)"),
        RuntimeError("The size of tensor a (5) must match the size of tensor b (7) at non-singleton dimension 1"),
        TypeError("forward() got an unexpected keyword argument 'speech_lengths'"),
        ValueError("`optimizers.gen.params` matches no trainable parameter"),
    ],
    ids=["nan-limit", "matmul-shape", "broadcast-shape", "type", "value"],
)
def test_errors_of_the_code_or_data_raise_at_once_with_retries_left(error):
    policy = RetryCurablePolicy(FailureConfig(max_failures=3))
    # One deterministic error among transient ones is enough: the restart would meet it again.
    failed = worker_error(ActorDiedError(), error)
    assert policy.make_decision(failed) is FailureDecision.RAISE


def test_lost_workers_and_peers_are_retried_up_to_max_failures():
    policy = RetryCurablePolicy(FailureConfig(max_failures=2))
    transient = [ActorDiedError(), RuntimeError("Connection closed by peer [127.0.0.1]:29500")]
    assert [policy.make_decision(worker_error(e)) for e in transient] == [FailureDecision.RETRY] * 2
    assert policy.make_decision(worker_error(ActorDiedError())) is FailureDecision.RAISE


def test_unlimited_retries_stay_unlimited_for_transient_errors():
    policy = RetryCurablePolicy(FailureConfig(max_failures=-1))
    assert all(policy.make_decision(worker_error(ActorDiedError())) is FailureDecision.RETRY for _ in range(20))


def test_workers_that_never_get_their_resources_are_not_waited_for_again():
    policy = RetryCurablePolicy(FailureConfig(max_failures=3))
    error = ControllerError(WorkerGroupStartupTimeoutError(num_workers=2))
    assert policy.make_decision(error) is FailureDecision.RAISE


def test_only_rays_memory_monitor_kills_count_as_memory_kills():
    from ray.exceptions import OutOfMemoryError

    from espnet3.orchestration.failures import describe_memory_kill, memory_kill

    monitor = ("1 worker(s) were killed due to the node running low on memory. Memory on the node (IP: x, ID: y) "
               "was 12.66GB used / 23.54GB limit (0.537845)")
    assert memory_kill(OutOfMemoryError(monitor)) == monitor
    wrapped = RuntimeError("training failed")
    wrapped.__cause__ = RuntimeError(monitor)
    assert memory_kill(wrapped) == monitor
    assert "12.66GB used of 23.54GB" in describe_memory_kill(monitor)
    # Ray's text for every unexpectedly dead worker lists the OOM killer as one possible cause
    sigkill = RuntimeError("Worker unexpectedly exits with a connection error code 2. There are some potential "
                           "root causes. (1) The process is killed by SIGKILL by OOM killer due to high memory usage.")
    assert memory_kill(sigkill) is None
