"""The batching rule of an elastic run, and the record of each worker-group start.

An elastic group (``--num-workers MIN-MAX``) trains with as many workers as Ray could place,
between MIN and MAX, and Ray restarts it from the latest checkpoint when it grows or shrinks.
The rule: **the global batch stays that of MAX workers**. The data's batches are per worker
(``dataloader.batch_bins``), so with ``w < MAX`` workers each optimizer step accumulates the
gradients of ``ceil(MAX / w)`` batches (Lightning's ``accumulate_grad_batches``, times the
train.yaml's own): per-worker memory, the learning rate and the number of optimizer steps per
epoch stay as planned. Where ``MAX / w`` is not whole the global batch is ``w * ceil(MAX / w) /
MAX`` times the planned one (recorded). Manual optimization (several optimizers, GAN turns)
cannot accumulate: its global batch is ``w / MAX`` of the planned one (recorded, and printed).

Every start of the group writes ``exp_dir/attempts/attempt-<ms>.json`` (rank 0): when, with how
many workers, the rule's numbers and the step it resumed from. ``train_result.json``'s
``preemptions`` and ``resizes`` are assembled from these and the checkpoints' metrics
(:func:`history`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from espnet3 import storage

ATTEMPTS_DIR = "attempts"


@dataclass(frozen=True)
class Attempt:
    """One start of the worker group."""

    started: float
    world_size: int
    max_workers: int
    accumulate_grad_batches: int
    global_batch_ratio: float
    resumed_step: int | None = None
    resumed_epoch: int | None = None

    @classmethod
    def start(cls, spec: Any, world_size: int, max_workers: int, automatic: bool,
              checkpoint_dir: str | None) -> Attempt:
        """This start's numbers (``spec``: the TrainSpec; ``checkpoint_dir``: the checkpoint resumed from)."""
        base = int(spec.trainer.get("accumulate_grad_batches", 1) or 1)
        factor = math.ceil(max_workers / world_size) if automatic and world_size < max_workers else 1
        resumed: dict = {}
        if checkpoint_dir is not None:
            from espnet3.orchestration.criteria import METRICS_FILE

            metrics_file = Path(checkpoint_dir, METRICS_FILE)
            if metrics_file.is_file():
                metrics = json.loads(metrics_file.read_text())
                resumed = {"resumed_step": int(metrics.get("step", 0)), "resumed_epoch": int(metrics.get("epoch", 0))}
        return cls(started=time.time(), world_size=world_size, max_workers=max_workers,
                   accumulate_grad_batches=base * factor,
                   global_batch_ratio=round(world_size * factor / max_workers, 4), **resumed)

    def line(self) -> str | None:
        """The console's line for a restart or a start below MAX workers (``None`` for a plain start)."""
        if self.world_size == self.max_workers and self.resumed_step is None:
            return None
        where = f"resumed at step {self.resumed_step}" if self.resumed_step is not None else "started"
        batch = ("the planned global batch" if self.global_batch_ratio == 1
                 else f"{self.global_batch_ratio:.3g}x the planned global batch")
        return (f"[espnet3] {where} with {self.world_size} of {self.max_workers} workers: "
                f"accumulate_grad_batches {self.accumulate_grad_batches} ({batch})")

    def save(self, exp_dir: str | Path) -> None:
        storage.atomic_write_json(Path(exp_dir) / ATTEMPTS_DIR / f"attempt-{int(self.started * 1000)}.json", asdict(self))


def read_attempts(exp_dir: str | Path) -> list[Attempt]:
    """Every start of the run's worker group, oldest first (the names hold the start in ms)."""
    return [Attempt(**record) for record in storage.read_json_files(storage.home(Path(exp_dir) / ATTEMPTS_DIR), "attempt-")]


def history(attempts: list[Attempt], reports: list) -> dict[str, list[dict]]:
    """``preemptions`` (one per checkpoint written for a notice) and ``resizes`` (every start with
    another number of workers than the one before), for ``train_result.json``.

    ``steps_repeated`` of a preemption: optimizer steps trained before the stop (its checkpoint's
    step, since every rank stops there) minus the step the next group resumed from.
    """
    from espnet3.orchestration.preemption import PREEMPTION_KEY

    def next_start(after: float) -> Attempt | None:
        return next((a for a in attempts if a.started > after), None)

    preemptions = []
    for report in reports:
        record = report.metrics.get(PREEMPTION_KEY)
        if not isinstance(record, dict):
            continue
        following = next_start(record["time"])
        entry = {**record, "world_size_before": record.get("world_size"),
                 "world_size_after": following.world_size if following else None,
                 "steps_repeated": (max(0, record["checkpoint_step"] - following.resumed_step)
                                    if following and following.resumed_step is not None else None)}
        entry.pop("world_size", None)
        preemptions.append(entry)
    resizes = []
    for before, after in zip(attempts, attempts[1:]):
        if before.world_size == after.world_size:
            continue
        noticed = any(before.started < p["time"] < after.started for p in preemptions)
        resizes.append({
            "time": after.started,
            "reason": "preemption" if noticed else ("grow" if after.world_size > before.world_size else "shrink"),
            "world_size_before": before.world_size, "world_size_after": after.world_size,
            "checkpoint_step": after.resumed_step,
            "accumulate_grad_batches": after.accumulate_grad_batches,
            "global_batch_ratio": after.global_batch_ratio,
        })
    return {"preemptions": preemptions, "resizes": resizes}


def node_death_detection_s() -> float:
    """How long Ray's GCS takes to declare a vanished node dead (its health-check settings)."""
    import os

    period = float(os.environ.get("RAY_health_check_period_ms", 3000))
    threshold = float(os.environ.get("RAY_health_check_failure_threshold", 5))
    return period * (threshold + 2) / 1000


def drain_aware_scaling_policy(scaling_config: Any) -> Any:
    """Ray's elastic scaling policy, sizing a restarted group by the nodes that will still be there.

    Ray 2.60's policy sizes a restarted group by its autoscaling coordinator's reserved resources,
    which include a node that has a drain notice until the node is gone, and a node that just died
    for a while. A group sized with such a node never gets placed and the restart waits until
    ``timeouts.worker_start_s``. So only nodes the GCS holds alive and not draining are counted,
    and after a failure that was not a preemption stop the decision waits until a dead node would
    have been noticed (:func:`node_death_detection_s`). After a preemption stop
    (:meth:`expect_graceful_stop`) it restarts at once.

    A running group is grown, never shrunk: the ranks on a draining node get its preemption notice
    and stop after a checkpoint at the next step (:mod:`~espnet3.orchestration.preemption`), and a
    dead node fails the group. Shrunk by the resize monitor instead (which ran, on this machine,
    a few seconds after a drain, before the notice's step), the group restarted from the last
    regular checkpoint and lost the steps since.
    """
    import ray
    from ray.train.v2._internal.execution.scaling_policy.elastic import ElasticScalingPolicy
    from ray.train.v2._internal.execution.scaling_policy.scaling_policy import NoopDecision, ResizeDecision

    settle_s = node_death_detection_s()

    class DrainAwareElasticScalingPolicy(ElasticScalingPolicy):
        def __init__(self, config):
            super().__init__(config)
            self._started_once = False
            self._graceful = False
            self._restart_after: float | None = None

        def expect_graceful_stop(self) -> None:
            self._graceful = True

        def make_decision_for_non_running_worker_group(self):
            if self._started_once and not self._graceful:
                now = time.monotonic()
                if self._restart_after is None:
                    self._restart_after = now + settle_s
                if now < self._restart_after:
                    return NoopDecision()
            decision = super().make_decision_for_non_running_worker_group()
            if not isinstance(decision, NoopDecision):
                self._started_once, self._graceful, self._restart_after = True, False, None
            return decision

        def make_decision_for_running_worker_group(self, worker_group_state, worker_group_status):
            decision = super().make_decision_for_running_worker_group(worker_group_state, worker_group_status)
            if isinstance(decision, ResizeDecision) and decision.num_workers < worker_group_state.num_workers:
                return NoopDecision()
            return decision

        def _get_reserved_resources(self):
            reserved = super()._get_reserved_resources()
            if not reserved:
                return reserved
            try:
                draining = set(ray._private.state.state.get_draining_nodes() or {})
                alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
            except Exception:  # the GCS is briefly unreachable: size the group as Ray would
                return reserved
            return {node: resources for node, resources in reserved.items() if node in alive and node not in draining}

    return DrainAwareElasticScalingPolicy(scaling_config)
