"""``best_model_criterion``: which reported checkpoints a run keeps, and which it averages.

ESPnet2 recipes keep and average by several metrics at once (``[[valid/acc, 10, max],
[valid/loss, 10, min]]`` gives ``valid.acc.ave_10best.pth`` and ``valid.loss.ave_10best.pth``).
Ray's ``CheckpointConfig`` scores one metric only, so the selection is made here, from the
metrics each checkpoint was reported with: every criterion ranks the checkpoints on its own, and a
checkpoint survives while it is in any criterion's top-K, or is the latest (the one a resumed run
continues from).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class BestCriterion:
    """One ``[metric, K, min|max]`` entry of ``best_model_criterion``."""

    metric: str
    keep: int
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"best_model_criterion mode must be min or max, got {self.mode!r}")
        if self.keep < 1:
            raise ValueError(f"best_model_criterion K must be >= 1, got {self.keep}")

    @property
    def averaged_name(self) -> str:
        """ESPnet's name for the averaged model, e.g. ``valid.loss.ave_3best.pth``."""
        return f"{self.metric.replace('/', '.')}.ave_{self.keep}best.pth"

    def best(self, reports: Sequence[Report]) -> list[Report]:
        """The top-K ``reports`` by this metric, best first; reports without it (or with NaN) are not
        ranked, nor checkpoints written for a preemption notice (no validation ran for them).

        Ties go to the later report, as the later model has seen more data.
        """
        from espnet3.orchestration.preemption import PREEMPTION_KEY

        scored = [r for r in reports if _finite(r.metrics.get(self.metric)) and PREEMPTION_KEY not in r.metrics]
        sign = -1.0 if self.mode == "max" else 1.0
        scored.sort(key=lambda r: (sign * float(r.metrics[self.metric]), -r.order))
        return scored[: self.keep]


@dataclass(frozen=True)
class Report:
    """A reported checkpoint: its name (the directory), the metrics reported with it, and its order."""

    name: str
    metrics: Mapping[str, Any]
    order: int


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_criteria(entries: Sequence[Sequence[Any]]) -> tuple[BestCriterion, ...]:
    """``best_model_criterion`` (already shape-checked by the config schema) as typed criteria."""
    return tuple(BestCriterion(str(metric), int(keep), str(mode)) for metric, keep, mode in entries)


def checkpoints_to_keep(reports: Sequence[Report], criteria: Sequence[BestCriterion]) -> set[str]:
    """Names of the checkpoints to keep: the union of every criterion's top-K, plus the latest.

    A checkpoint dropped here can never come back: later reports only push it further down.
    """
    keep = {r.name for criterion in criteria for r in criterion.best(reports)}
    if reports:
        keep.add(max(reports, key=lambda r: r.order).name)
    return keep
