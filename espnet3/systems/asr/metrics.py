"""ASR error rates, scored as ESPnet2's asr.sh scores them.

asr.sh tokenizes reference and hypothesis with ``tokenize_text`` (characters with ``<space>``
as a token for CER, words for WER), runs the text cleaner on the reference only, and counts
edit operations with sclite. The same counts come from ``editdistance`` here; the result is a
fraction (0.05 = 5 %).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from espnet3.systems.base.metric import Metric, Table, aligned
from espnet3.utils.espnet2_imports import import_espnet2


class _ErrorRate(Metric):
    name = ""

    def __init__(self, clean_types: Sequence[str] | None = None, **keys: str):
        super().__init__(**keys)
        self.clean_types = list(clean_types or [])

    def _units(self, text: str) -> list[str]:
        raise NotImplementedError

    def score(self, tables: Mapping[str, Table]) -> dict[str, float]:
        import editdistance

        cleaner = None
        if self.clean_types:
            cleaner = import_espnet2("espnet2.text.cleaner").TextCleaner(self.clean_types)
        errors = total = 0
        for _, hyp, ref in aligned(tables["hyp"], tables["ref"], "hypothesis"):
            ref_units = self._units(cleaner(ref) if cleaner else ref)
            errors += editdistance.eval(self._units(hyp), ref_units)
            total += len(ref_units)
        return {self.name: errors / max(total, 1)}


class CER(_ErrorRate):
    """Character error rate; a space counts as a character (ESPnet2's ``<space>`` token)."""

    name = "cer"

    def _units(self, text: str) -> list[str]:
        return list(" ".join(text.split()))


class WER(_ErrorRate):
    """Word error rate."""

    name = "wer"

    def _units(self, text: str) -> list[str]:
        return text.split()
