"""Delete the checkpoints no ``best_model_criterion`` entry wants any more, on Ray Train's controller.

Ray keeps every reported checkpoint (its ``CheckpointConfig`` can rank by one metric only), and
this callback prunes after each report (:func:`espnet3.orchestration.criteria.checkpoints_to_keep`).
It removes a pruned checkpoint's files but leaves its directory and ``metrics.json``: Ray's run
snapshot lists every reported checkpoint and refuses to resume a run (``--resume``) whose
directories are gone.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ray.train import UserCallback

from espnet3 import storage
from espnet3.orchestration.criteria import METRICS_FILE, BestCriterion, Report, checkpoints_to_keep

CHECKPOINT_GLOB = "checkpoint_*"


def read_reports(run_dir: str | Path, upto: str | None = None) -> list[Report]:
    """Every checkpoint reported in ``run_dir`` (a path or a URI; Ray names them by time, so names sort by age).

    ``upto``: only checkpoints named up to this one. Uploads run in the background, so while the
    controller handles one report the next checkpoint may be half-written beside it.
    """
    reports = []
    for name in storage.listdir(run_dir):
        if upto is not None and name > upto:
            continue
        metrics = storage.join(run_dir, name, METRICS_FILE)
        if fnmatch.fnmatch(name, CHECKPOINT_GLOB) and storage.is_file(metrics):
            reports.append(Report(name, json.loads(storage.read_text(metrics)), len(reports)))
    return reports


def prune(run_dir: str | Path, criteria: Sequence[BestCriterion], upto: str | None = None) -> list[str]:
    """Empty every checkpoint of ``run_dir`` (up to ``upto``, see :func:`read_reports`) outside
    :func:`checkpoints_to_keep`; returns the pruned ones."""
    reports = read_reports(run_dir, upto)
    keep = checkpoints_to_keep(reports, criteria)
    pruned = []
    for report in reports:
        directory = storage.join(run_dir, report.name)
        files = [f for f in storage.listdir(directory) if f != METRICS_FILE]
        if report.name in keep or not files:
            continue
        for name in files:
            storage.delete(storage.join(directory, name))
        pruned.append(directory)
    return pruned


class CheckpointPruner(UserCallback):
    """Ray Train ``UserCallback``: after every report, prune the run directory by all criteria.

    Stateless (the metrics live beside each checkpoint), so a restarted controller or a
    resumed run prunes exactly as an uninterrupted one.
    """

    def __init__(self, run_dir: str | Path, criteria: Sequence[BestCriterion]) -> None:
        self.run_dir = str(run_dir)
        self.criteria = tuple(criteria)
        # The controller actor runs wherever Ray puts it, without the launcher's environment.
        self.storage_env = storage.worker_env()

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if checkpoint is not None:
            storage.use_env(self.storage_env)
            prune(self.run_dir, self.criteria, upto=os.path.basename(str(checkpoint.path).rstrip("/")))
