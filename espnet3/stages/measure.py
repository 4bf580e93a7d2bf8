"""The measure stage: score the infer stage's outputs with the task's metrics (or the config's).

Writes ``<infer dir>/<split>/metrics.json`` and returns the scores for one printed table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from espnet3.data.checks import read_table
from espnet3.data.plan import DataPlan
from espnet3.systems.base.metric import DATASET_PREFIX, Metric
from espnet3.storage import atomic_write_json

# Each split's scores, beside its hypotheses in the infer directory.
SCORES_FILE = "metrics.json"


def dataset_table(plan: DataPlan, split: str, name: str) -> dict[str, str]:
    """``dataset:<name>`` as ``utt_id -> value``: a stream's file, a file beside the split's first
    one, or, for a ``_target_`` dataset (an egs3 recipe's), each item's ``name`` as it returns it."""
    source = plan.source(split)
    if source.target is not None:
        from espnet3.data.dataset import build_dataset

        dataset = build_dataset(source, None)  # a TargetDataset: the items as the data plan reads them
        table = {}
        for key in dataset.keys():
            utt_id, item = dataset.raw(key)
            if name not in item or not isinstance(item[name], str):
                raise ValueError(
                    f"a metric reads `{DATASET_PREFIX}{name}` for split `{split}`, whose items have no text "
                    f"`{name}` (keys: {', '.join(sorted(item))}); re-point the metric's input"
                )
            table[utt_id] = item[name]
        return table
    return _table(dataset_file(plan, split, name))


def dataset_file(plan: DataPlan, split: str, name: str) -> Path:
    """The file behind ``dataset:<name>``: a data stream's file, or a file beside the split's first one."""
    source = plan.source(split)
    for triple in source.triples:
        if triple.name == name:
            return triple.path
    if source.triples:
        beside = source.triples[0].path.parent / name
        if beside.is_file():
            return beside
    names = ", ".join(t.name for t in source.triples) or "none"
    raise ValueError(
        f"a metric reads `{DATASET_PREFIX}{name}` for split `{split}`, which is neither one of its data "
        f"streams ({names}) nor a file beside its first data file; add it to `{source.key}` or re-point "
        "the metric's input"
    )


def _table(path: Path) -> dict[str, str]:
    return read_table(path, "'<utt_id> <value>' lines", allow_empty_value=True)[0]


def _source(plan: DataPlan, split: str, split_dir: Path, source: str, metric: Metric) -> dict[str, str]:
    if source.startswith(DATASET_PREFIX):
        return dataset_table(plan, split, source.removeprefix(DATASET_PREFIX))
    path = split_dir / source
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the infer stage first (or re-point an input of {metric!r})")
    return _table(path)


def measure(plan: DataPlan, metrics: Sequence[Metric], infer_dir: Path, splits: Sequence[str]
            ) -> dict[str, dict[str, float]]:
    """Score every split; returns ``split -> {metric name: value}`` and writes each ``metrics.json``."""
    scores: dict[str, dict[str, float]] = {}
    for split in splits:
        split_dir = infer_dir / split
        result: dict[str, float] = {}
        read: dict[str, dict[str, str]] = {}  # CER and WER both read dataset:text: once (a whole pass over a _target_ split)
        for metric in metrics:
            tables = {}
            for role, source in metric.inputs.items():
                if source not in read:
                    read[source] = _source(plan, split, split_dir, source, metric)
                tables[role] = read[source]
            result.update(metric.score(tables))
        atomic_write_json(split_dir / SCORES_FILE, result)
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
