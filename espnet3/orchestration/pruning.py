"""Delete the checkpoints no ``best_model_criterion`` entry wants any more, on Ray Train's controller.

Ray keeps every reported checkpoint (its ``CheckpointConfig`` can rank by one metric only), and
this callback prunes after each report (:func:`espnet3.orchestration.criteria.checkpoints_to_keep`).
It removes a pruned checkpoint's files but leaves its directory and ``metrics.json``: Ray's run
snapshot lists every reported checkpoint and refuses to resume a run (``--resume``) whose
directories are gone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from ray.train import UserCallback

from espnet3.orchestration.criteria import METRICS_FILE, BestCriterion, Report, checkpoints_to_keep

CHECKPOINT_GLOB = "checkpoint_*"


def read_reports(run_dir: Path) -> list[Report]:
    """Every checkpoint reported in ``run_dir`` (Ray names them by time, so names sort by age)."""
    dirs = sorted(d for d in Path(run_dir).glob(CHECKPOINT_GLOB) if (d / METRICS_FILE).is_file())
    return [Report(d.name, json.loads((d / METRICS_FILE).read_text()), i) for i, d in enumerate(dirs)]


def prune(run_dir: Path, criteria: Sequence[BestCriterion]) -> list[Path]:
    """Empty every checkpoint of ``run_dir`` outside :func:`checkpoints_to_keep`; returns the pruned ones."""
    keep = checkpoints_to_keep(read_reports(run_dir), criteria)
    pruned = []
    for report in read_reports(run_dir):
        directory = Path(run_dir) / report.name
        files = [f for f in directory.iterdir() if f.name != METRICS_FILE]
        if report.name in keep or not files:
            continue
        for path in files:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        pruned.append(directory)
    return pruned


class CheckpointPruner(UserCallback):
    """Ray Train ``UserCallback``: after every report, prune the run directory by all criteria.

    Stateless (the metrics live beside each checkpoint), so a restarted controller or a
    resumed run prunes exactly as an uninterrupted one.
    """

    def __init__(self, run_dir: Path, criteria: Sequence[BestCriterion]) -> None:
        self.run_dir = Path(run_dir)
        self.criteria = tuple(criteria)

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if checkpoint is not None:
            prune(self.run_dir, self.criteria)
