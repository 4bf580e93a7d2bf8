"""Which training failures a restart can cure, decided on Ray Train's controller.

Ray Train retries every worker failure up to ``max_failures`` times. A killed worker, a lost
node or a broken connection deserve that; a bug in the data or the model does not: it fails
again on every attempt, after a minute of start-up each time, and the user waits for nothing.
:class:`RetryCurablePolicy` raises those at once and leaves the rest to Ray's own policy.
"""

from __future__ import annotations

import re

from lightning.fabric.utilities.exceptions import MisconfigurationException
from ray.train.v2._internal.execution.failure_handling import (
    DefaultFailurePolicy,
    FailureDecision,
    FailurePolicy,
)
from ray.train.v2.api.config import FailureConfig
from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError
from ray.train.v2.api.exceptions import ControllerError, TrainingFailedError, WorkerGroupError

from espnet3.components.modeling.nan_guard import NaNLimitError

# Errors raised by the code and data themselves: the same input fails the same way again.
DETERMINISTIC_TYPES: tuple[type[BaseException], ...] = (
    NaNLimitError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    ImportError,
    NotImplementedError,
    AssertionError,
    ZeroDivisionError,
    FileNotFoundError,
    MisconfigurationException,
)
# torch reports shape bugs as RuntimeErrors, which also cover transient failures (a lost peer):
# only these messages mark a RuntimeError as the model's own.
SHAPE_ERROR = re.compile(
    r"size of tensor|must match the size|shapes? .* cannot be multiplied|mat1 and mat2|"
    r"Expected .* (dimension|size|dim)|out of bounds|invalid shape|Sizes of tensors must match",
    re.IGNORECASE,
)


def is_deterministic(error: BaseException) -> bool:
    """Whether ``error`` (a worker's exception) would recur on a restart."""
    if isinstance(error, DETERMINISTIC_TYPES):
        return True
    return isinstance(error, RuntimeError) and bool(SHAPE_ERROR.search(str(error)))


# What Ray's memory monitor says when it kills tasks and actors (the Train controller, its helper
# actors or the workers) on a node near its memory limit. Not "OOM killer": Ray names that as one
# *possible* cause in the message of every worker that died unexpectedly (a SIGKILL, a segfault).
MEMORY_KILL = re.compile(r"killed due to the node running low on memory")
MEMORY_FIGURES = re.compile(r"was ([\d.]+GB) used / ([\d.]+GB) limit")


def _chain(error: BaseException | None, seen: set[int] | None = None):
    """``error``, its causes, and the worker and controller failures a Train error holds."""
    seen = set() if seen is None else seen
    if error is None or id(error) in seen:
        return
    seen.add(id(error))
    yield error
    for inner in [*(getattr(error, "worker_failures", None) or {}).values(),
                  getattr(error, "controller_failure", None), error.__cause__, error.__context__]:
        yield from _chain(inner, seen)


def memory_kill(error: BaseException) -> str | None:
    """Ray's memory monitor message behind ``error`` (a failed fit), or ``None`` if memory was not the cause.

    Ray 2.60 surfaces such a kill either as ``ray.exceptions.OutOfMemoryError`` from ``fit()`` (the
    controller was killed) or inside a Train error; either way the same batches run out of memory
    again after a restart, so it is the user's to cure, not Ray's to retry.
    """
    from ray.exceptions import OutOfMemoryError

    for inner in _chain(error):
        text = str(inner)
        if isinstance(inner, OutOfMemoryError) or MEMORY_KILL.search(text):
            return text
    return None


def describe_memory_kill(message: str) -> str:
    """The console's explanation of a memory kill: the node's figures and the fixes."""
    figures = MEMORY_FIGURES.search(message)
    used = f" ({figures.group(1)} used of {figures.group(2)})" if figures else ""
    return (
        f"Ray killed the training processes because the node ran out of memory{used}. Each worker holds "
        "its batches, model and optimizer state: lower `dataloader.batch_bins` (or `dataloader.batch_size`), "
        "or run fewer workers per node (--num-workers, or --num-gpus on more nodes); not retried, since the "
        "same batches would run out of memory again"
    )


def is_startup_timeout(error: TrainingFailedError) -> bool:
    """Whether the workers never got their resources within ``timeouts.worker_start_s``."""
    return isinstance(error, ControllerError) and isinstance(error.controller_failure, WorkerGroupStartupTimeoutError)


def is_preemption_stop(error: TrainingFailedError) -> bool:
    """Whether every failed rank stopped after the checkpoint for a preemption notice (and not
    because the launcher asked: that run ends, see :func:`is_requested_stop`)."""
    from espnet3.orchestration.preemption import PreemptionStop

    failures = getattr(error, "worker_failures", None) or {}
    return (bool(failures) and all(isinstance(e, PreemptionStop) for e in failures.values())
            and not is_requested_stop(error))


def is_requested_stop(error: BaseException) -> bool:
    """Whether a rank stopped after its checkpoint because the launcher asked (SIGTERM)."""
    from espnet3.orchestration.preemption import StopRequested

    return any(isinstance(e, StopRequested) for e in _chain(error))


class RetryCurablePolicy(FailurePolicy):
    """Raise worker failures a restart cannot cure; decide the others like Ray's default policy.

    Also raised at once: workers that could not be placed within ``timeouts.worker_start_s``
    (Ray retries that forever by default, which looks like a hang), and workers Ray killed for lack
    of memory (:func:`memory_kill`). A group that stopped after its checkpoint for a preemption
    notice (:class:`~espnet3.orchestration.preemption.PreemptionStop` on every rank) is retried on
    ``max_preemption_failures``, never on ``max_failures``.
    """

    def __init__(self, failure_config: FailureConfig, on_preemption_stop=None):
        super().__init__(failure_config)
        self.default = DefaultFailurePolicy(failure_config)
        self.preemptions = 0
        self.on_preemption_stop = on_preemption_stop

    def make_decision(self, training_failed_error: TrainingFailedError) -> FailureDecision:
        if is_preemption_stop(training_failed_error):
            self.preemptions += 1
            limit = self.failure_config.max_preemption_failures
            if limit != -1 and self.preemptions > limit:
                return FailureDecision.RAISE
            if self.on_preemption_stop is not None:
                self.on_preemption_stop()
            return FailureDecision.RETRY
        if is_startup_timeout(training_failed_error) or is_requested_stop(training_failed_error):
            return FailureDecision.RAISE
        if isinstance(training_failed_error, WorkerGroupError) and any(
            is_deterministic(error) for error in training_failed_error.worker_failures.values()
        ):
            return FailureDecision.RAISE
        if memory_kill(training_failed_error) is not None:
            return FailureDecision.RAISE
        return self.default.make_decision(training_failed_error)


def espnet_trainer_class():
    """``TorchTrainer`` deciding retries with :class:`RetryCurablePolicy` and sizing an elastic group
    without draining nodes (imported lazily: Ray Train is slow to import)."""
    from ray.train.torch import TorchTrainer

    class ESPnetTorchTrainer(TorchTrainer):
        # Ray Train builds its failure policy from FailureConfig alone; this is the one place
        # where the controller's arguments can be changed.
        def _initialize_and_run_controller(self, **controller_init_kwargs):
            from ray.train.v2._internal.execution.scaling_policy.elastic import ElasticScalingPolicy

            from espnet3.orchestration.elastic import drain_aware_scaling_policy

            graceful = None
            if isinstance(controller_init_kwargs.get("scaling_policy"), ElasticScalingPolicy):
                scaling = controller_init_kwargs["scaling_policy"] = drain_aware_scaling_policy(self.scaling_config)
                graceful = scaling.expect_graceful_stop
            controller_init_kwargs["failure_policy"] = RetryCurablePolicy(self.run_config.failure_config, graceful)
            return super()._initialize_and_run_controller(**controller_init_kwargs)

    return ESPnetTorchTrainer
