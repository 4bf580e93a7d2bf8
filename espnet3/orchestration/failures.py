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


def is_startup_timeout(error: TrainingFailedError) -> bool:
    """Whether the workers never got their resources within ``timeouts.worker_start_s``."""
    return isinstance(error, ControllerError) and isinstance(error.controller_failure, WorkerGroupStartupTimeoutError)


class RetryCurablePolicy(FailurePolicy):
    """Raise worker failures a restart cannot cure; decide the others like Ray's default policy.

    Also raised at once: workers that could not be placed within ``timeouts.worker_start_s``
    (Ray retries that forever by default, which looks like a hang).
    """

    def __init__(self, failure_config: FailureConfig):
        super().__init__(failure_config)
        self.default = DefaultFailurePolicy(failure_config)

    def make_decision(self, training_failed_error: TrainingFailedError) -> FailureDecision:
        if is_startup_timeout(training_failed_error):
            return FailureDecision.RAISE
        if isinstance(training_failed_error, WorkerGroupError) and any(
            is_deterministic(error) for error in training_failed_error.worker_failures.values()
        ):
            return FailureDecision.RAISE
        return self.default.make_decision(training_failed_error)


def espnet_trainer_class():
    """``TorchTrainer`` deciding retries with :class:`RetryCurablePolicy` (imported lazily: Ray Train is slow to import)."""
    from ray.train.torch import TorchTrainer

    class ESPnetTorchTrainer(TorchTrainer):
        # Ray Train builds its failure policy from FailureConfig alone; this is the one place
        # where the controller's arguments can be changed.
        def _initialize_and_run_controller(self, **controller_init_kwargs):
            controller_init_kwargs["failure_policy"] = RetryCurablePolicy(self.run_config.failure_config)
            return super()._initialize_and_run_controller(**controller_init_kwargs)

    return ESPnetTorchTrainer
