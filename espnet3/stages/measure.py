"""The measure stage: score the infer stage's outputs with the task's metrics (or the config's).

Writes ``<infer dir>/<split>/metrics.json`` and returns the scores for one printed table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from espnet3.data.checks import read_table
from espnet3.data.plan import DataPlan
from espnet3.systems.base.metric import Metric
from espnet3.utils.atomic import atomic_write_json


def reference_file(plan: DataPlan, split: str, ref_key: str) -> Path:
    """The file holding ``ref_key`` for ``split``: a data stream's file, or a file beside the first one."""
    source = plan.source(split)
    for triple in source.triples:
        if triple.name == ref_key:
            return triple.path
    if source.triples:
        beside = source.triples[0].path.parent / ref_key
        if beside.is_file():
            return beside
    names = ", ".join(t.name for t in source.triples) or "none"
    raise ValueError(
        f"a metric needs the reference `{ref_key}` for split `{split}`, which is neither one of its data "
        f"streams ({names}) nor a file beside its first data file; add it to `{source.key}` or set the "
        "metric's `ref_key`"
    )


def _table(path: Path) -> dict[str, str]:
    return read_table(path, f"'<utt_id> <value>' lines", allow_empty_value=True)[0]


def measure(plan: DataPlan, metrics: Sequence[Metric], infer_dir: Path, splits: Sequence[str]
            ) -> dict[str, dict[str, float]]:
    """Score every split; returns ``split -> {metric name: value}`` and writes each ``metrics.json``."""
    scores: dict[str, dict[str, float]] = {}
    for split in splits:
        split_dir = infer_dir / split
        result: dict[str, float] = {}
        for metric in metrics:
            hyp_file = split_dir / metric.hyp_key
            if not hyp_file.is_file():
                raise FileNotFoundError(
                    f"{hyp_file} does not exist: run the infer stage first (or fix `hyp_key` of {metric!r})"
                )
            refs = _table(reference_file(plan, split, metric.ref_key)) if metric.ref_key else {}
            result.update(metric(_table(hyp_file), refs))
        atomic_write_json(split_dir / "metrics.json", result)
        scores[split] = result
    return scores


def format_table(scores: Mapping[str, Mapping[str, Any]], title: str) -> str:
    """One row per split, one column per metric."""
    names = list(dict.fromkeys(k for row in scores.values() for k in row))
    width = max([12, *(len(n) + 2 for n in names)])
    rows = [title, f"{'split':<12}" + "".join(f"{n:>{width}}" for n in names)]
    for split, row in scores.items():
        cells = "".join(f"{_fmt(row.get(n)):>{width}}" for n in names)
        rows.append(f"{split:<12}{cells}")
    return "\n".join(rows)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)
