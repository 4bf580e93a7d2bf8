"""What a finished sweep leaves behind: results.csv, a printed table, best.yaml, metric.png."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espnet3.storage import atomic_save
from espnet3.sweep.spec import SweepSpec


@dataclass(frozen=True)
class TrialRow:
    """One trial's outcome.

    Attributes:
        status: ``TERMINATED`` (finished, or stopped early by ASHA: see ``iterations``) or
            ``ERROR`` (the trial raised, e.g. after ``max_nan_batches``).
        best: the best ``metric`` over the trial's reports; ``None`` if it reported none.
        iterations: the trial's last ``training_iteration`` (number of reports).
    """

    trial_id: str
    status: str
    params: dict[str, Any]
    best: float | None
    iterations: int
    error: str | None


def trial_rows(grid, sweep: SweepSpec) -> list[TrialRow]:
    rows = []
    for result in grid:
        history = _history(result, sweep.metric)
        finite = [v for v in history[sweep.metric] if math.isfinite(v)] if history is not None else []
        pick = min if sweep.mode == "min" else max
        rows.append(TrialRow(
            trial_id=Path(result.path).name,
            status="ERROR" if result.error else "TERMINATED",
            params={d.path: (result.config or {}).get(d.path) for d in sweep.space},
            best=pick(finite) if finite else None,
            iterations=int((result.metrics or {}).get("training_iteration", 0)),
            error=f"{type(result.error).__name__}: {str(result.error).splitlines()[0] if str(result.error) else ''}" if result.error else None,
        ))
    return sorted(rows, key=lambda r: r.trial_id)


def _history(result, metric: str):
    frame = result.metrics_dataframe
    return frame if frame is not None and metric in frame else None


def write_csv(rows: list[TrialRow], sweep: SweepSpec, path: Path) -> Path:
    header = ["trial_id", "status", *(d.path for d in sweep.space), f"best {sweep.metric}", "iterations", "error"]
    def save(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for r in rows:
                writer.writerow([r.trial_id, r.status, *r.params.values(), "" if r.best is None else r.best, r.iterations, r.error or ""])

    return atomic_save(path, save)


def format_table(rows: list[TrialRow], sweep: SweepSpec) -> str:
    header = ["trial_id", "status", *(d.path for d in sweep.space), f"best {sweep.metric}", "iterations"]
    body = [
        [r.trial_id, r.status, *(_short(v) for v in r.params.values()), "-" if r.best is None else f"{r.best:.4f}", str(r.iterations)]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in [header, *body]]
    lines += [f"{r.trial_id}: {r.error}" for r in rows if r.error]
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_metric(grid, sweep: SweepSpec, path: Path) -> Path:
    """``metric`` against ``time_attr``, one line per trial: where ASHA cut each one off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for result in grid:
        frame = _history(result, sweep.metric)
        if frame is not None and sweep.time_attr in frame:
            ax.plot(frame[sweep.time_attr], frame[sweep.metric], marker="o", label=Path(result.path).name)
    ax.set_xlabel(sweep.time_attr)
    ax.set_ylabel(sweep.metric)
    ax.set_title(f"sweep {sweep.name}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
