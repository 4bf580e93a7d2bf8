"""The contract between the ``measure`` stage and a metric.

A metric compares one output of the ``infer`` stage (``hyp_key``: the file ``<split>/<hyp_key>``)
with a reference read from the test data (``ref_key``: a data stream of the split, such as
``text`` or ``speech_ref1``, or a file beside its first data file, such as ESPnet2's
``trial_label``). Both arrive as ``utt_id -> value`` tables: strings for text, file paths for
audio and arrays. A config may list any metric by ``_target_``:

    metrics:
      - {_target_: espnet3.systems.asr.metrics.CER, clean_types: [tacotron]}
      - {_target_: my_recipe.metrics.KeywordRecall, hyp_key: text, ref_key: text}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping


class Metric(ABC):
    """Scores ``hyp_key`` outputs against ``ref_key`` references; returns ``name -> value``."""

    hyp_key: str = "text"
    ref_key: str | None = "text"

    def __init__(self, hyp_key: str | None = None, ref_key: str | None = None):
        if hyp_key is not None:
            self.hyp_key = hyp_key
        if ref_key is not None:
            self.ref_key = ref_key

    @abstractmethod
    def __call__(self, hyps: Mapping[str, str], refs: Mapping[str, str]) -> dict[str, float]:
        """Score every utterance of ``refs`` (a missing hypothesis counts as empty / an error)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hyp_key={self.hyp_key!r}, ref_key={self.ref_key!r})"


def aligned(hyps: Mapping[str, str], refs: Mapping[str, str], what: str) -> list[tuple[str, str, str]]:
    """``(utt, hyp, ref)`` for every reference; raises when the hypotheses lack utterances."""
    missing = [u for u in refs if u not in hyps]
    if missing:
        raise ValueError(
            f"{len(missing)} utterance(s) of the references have no {what} (e.g. {missing[0]!r}); "
            "run the infer stage for this split again"
        )
    return [(u, hyps[u], refs[u]) for u in sorted(refs)]
