"""Preemption notices: read on each rank without a collective, agreed on in the step's one collective.

When a node holding ranks is about to go (a spot reclaim, ``ray drain-node``), Ray Train's
``PreemptionWatcher`` leaves a ``PreemptionInfo`` on every worker of the group. Ray's public
``ray.train.get_preemption_info()`` is a barrier across all workers; calling it every step would
add a second synchronisation to the one the NaN consensus already makes. :class:`LocalNotice`
reads the same info where the watcher put it on this worker (a Python attribute: no RPC, no
barrier), and :class:`~espnet3.components.modeling.nan_guard.NonFiniteGuard` folds it into its
``all_reduce(MAX)``: every rank learns at the same step that some rank has a notice.

At the next optimizer-step boundary every rank then saves the checkpoint (with the sampler's
progress) and reports it, and the training function ends with :class:`PreemptionStop`, which
:class:`~espnet3.orchestration.failures.RetryCurablePolicy` retries without charging
``max_failures``: Ray starts the group again on the nodes that are not draining (an elastic group
at once, with the survivors; a fixed one when a replacement has joined), from that checkpoint.

The launcher asks for the same through a :class:`StopBoard` when it must end the run itself (a
SIGTERM from a scheduler or ``timeout``): each worker polls the board once a second in a thread,
and the step's collective spreads it; the group then ends with :class:`StopRequested`, which is
not retried, and the launcher exits with its checkpoint written at that step.
"""

from __future__ import annotations

import threading
import time
from typing import Any

# What a checkpoint written for a notice records under `preemption` in its metrics.json.
PREEMPTION_KEY = "preemption"


class PreemptionStop(RuntimeError):
    """Every rank saved a checkpoint for a preemption notice and stops; Ray restarts the group from it."""


class StopRequested(PreemptionStop):
    """Every rank saved a checkpoint because the launcher asked (:class:`StopBoard`); the run ends."""


class StopBoard:
    """A Ray actor (no CPUs) holding the launcher's request that every rank checkpoint and stop.

    A sweep's trials also sign in and out (:meth:`enter`, :meth:`leave`, :meth:`stopped`), so the
    launcher can tell when every running trial has its checkpoint (:meth:`settled`).
    """

    def __init__(self) -> None:
        self.request: dict | None = None
        self.running: set[str] = set()
        self.done: set[str] = set()

    def ask(self, reason: str) -> None:
        if self.request is None:
            self.request = {"reason": reason, "time": time.time()}

    def get(self) -> dict | None:
        return self.request

    def enter(self, trial_id: str) -> None:
        self.running.add(trial_id)

    def leave(self, trial_id: str) -> None:
        self.running.discard(trial_id)

    def stopped(self, trial_id: str) -> None:
        """The trial checkpointed for the request and waits to be ended."""
        self.done.add(trial_id)

    def settled(self) -> bool:
        """A request was made and every trial still running has checkpointed for it."""
        return self.request is not None and self.running <= self.done


# The board of the training now running in this process (the launcher's SIGTERM handler asks it).
_ARMED: list = []


def start_board() -> Any:
    """A new board, armed: a SIGTERM now asks the workers (:func:`armed`) until :func:`disarm`."""
    import ray

    _ARMED[:] = [ray.remote(num_cpus=0)(StopBoard).remote()]
    return _ARMED[0]


def armed() -> Any:
    """The board the workers of the training now running poll, or ``None``."""
    return _ARMED[0] if _ARMED else None


def disarm() -> None:
    """Training ended (the board has no reader any more)."""
    _ARMED.clear()


class LocalNotice:
    """This worker's view of a preemption notice (callable: whether there is one).

    Outside a Ray Train worker (a unit test, a plain Lightning run) there is never a notice.
    """

    def __init__(self, board: Any = None, poll_s: float = 1.0) -> None:
        self._context = _ray_preemption_context()
        self.seen_at: float | None = None
        self.requested: dict | None = None
        if board is not None:
            threading.Thread(target=self._watch, args=(board, poll_s), name="espnet3-stop-board", daemon=True).start()

    def _watch(self, board: Any, poll_s: float) -> None:
        import ray

        while self.requested is None:
            try:
                self.requested = ray.get(board.get.remote(), timeout=30)
            except Exception:  # the launcher is gone or busy: nothing to stop for
                pass
            time.sleep(poll_s)

    def info(self) -> Any:
        """Ray's ``PreemptionInfo`` on this worker, or ``None``."""
        return None if self._context is None else self._context.preemption_info

    def __call__(self) -> bool:
        noticed = self.requested is not None or self.info() is not None
        if noticed and self.seen_at is None:
            self.seen_at = time.time()
        return noticed

    def describe(self) -> dict[str, Any]:
        """What ``train_result.json`` records of the notice (rank 0's view: Ray's watcher tells every rank)."""
        info = self.info()
        if self.requested is not None:
            return {"reason": self.requested["reason"], "requested_at": self.requested["time"],
                    **({"noticed_at": self.seen_at} if self.seen_at else {})}
        record: dict[str, Any] = {"reason": "node drain"}
        if info is not None:
            record.update(nodes=list(info.preempted_node_ids), ranks=list(info.preempted_ranks),
                          deadline=info.deadline_ms / 1000 if info.deadline_ms else None)
        if self.seen_at is not None:
            record["noticed_at"] = self.seen_at
        return record


def _ray_preemption_context() -> Any:
    """Where Ray Train 2.60's watcher writes this worker's ``PreemptionInfo`` (``None`` outside a worker)."""
    try:
        from ray.train.v2._internal.execution.context import get_train_context

        return get_train_context().preemption_context
    except Exception:  # not inside a Ray Train worker
        return None
