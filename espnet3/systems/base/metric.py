"""The contract between the ``measure`` stage and a metric.

A metric reads ``utt_id -> value`` tables by role (``hyp``, ``ref``, ...). Each role names its
source: an output file of the ``infer`` stage (``text``, ``spk1.scp``), or, written
``dataset:<name>`` as upstream ESPnet3 does, the test data itself: a data stream of the split
(``dataset:text``, ``dataset:speech_ref1``) or a file beside its first data file (ESPnet2's
``dataset:trial_label``). Values are strings: text, or the path of an audio/array file. Any
metric can be listed by ``_target_``, its roles re-pointed with ``<role>_key`` arguments:

    metrics:
      - {_target_: espnet3.systems.asr.metrics.CER, clean_types: [tacotron]}
      - {_target_: my_recipe.metrics.KeywordRecall, hyp_key: text, ref_key: dataset:keywords}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

DATASET_PREFIX = "dataset:"
Table = Mapping[str, str]


class Metric(ABC):
    """Scores tables of utterances; returns ``name -> value``.

    Subclasses set :attr:`inputs` (role -> source) and implement :meth:`score`.
    """

    inputs: dict[str, str] = {"hyp": "text", "ref": f"{DATASET_PREFIX}text"}

    def __init__(self, **keys: str):
        inputs = dict(type(self).inputs)
        for argument, source in keys.items():
            role = argument.removesuffix("_key")
            if not argument.endswith("_key") or role not in inputs:
                valid = ", ".join(f"{r}_key" for r in inputs)
                raise TypeError(f"{type(self).__name__} takes no argument {argument!r}; its inputs are {valid}")
            inputs[role] = source
        self.inputs = inputs

    @abstractmethod
    def score(self, tables: Mapping[str, Table]) -> dict[str, float]:
        """Score with one table per role of :attr:`inputs`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{r}_key={s!r}' for r, s in self.inputs.items())})"


def aligned(hyps: Table, refs: Table, what: str) -> list[tuple[str, str, str]]:
    """``(utt, hyp, ref)`` for every reference; raises when the hypotheses lack utterances."""
    missing = [u for u in refs if u not in hyps]
    if missing:
        raise ValueError(
            f"{len(missing)} utterance(s) of the references have no {what} (e.g. {missing[0]!r}); "
            "run the infer stage for this split again"
        )
    return [(u, hyps[u], refs[u]) for u in sorted(refs)]
