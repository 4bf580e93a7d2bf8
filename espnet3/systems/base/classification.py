"""Accuracy of predicted labels: language ID, speaker or audio classes, intents."""

from __future__ import annotations

from collections.abc import Mapping

from espnet3.systems.base.metric import Metric, Table, aligned


class Accuracy(Metric):
    """Share of utterances whose predicted label equals the reference (``text`` vs ``dataset:label``).

    Labels are compared as whitespace-separated sets, so multi-label references work too.
    """

    inputs = {"hyp": "text", "ref": "dataset:label"}

    def score(self, tables: Mapping[str, Table]) -> dict[str, float]:
        rows = aligned(tables["hyp"], tables["ref"], "prediction")
        correct = sum(set(h.split()) == set(r.split()) for _, h, r in rows)
        return {"accuracy": correct / max(len(rows), 1)}
