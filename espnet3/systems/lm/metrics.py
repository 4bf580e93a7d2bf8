"""Corpus perplexity from ESPnet2's per-utterance ``utt2ppl`` and ``utt2ntokens``."""

from __future__ import annotations

import math
from collections.abc import Mapping

from espnet3.systems.base.metric import Metric, Table


class Perplexity(Metric):
    """``exp(sum of token NLLs / sum of tokens)`` over the split, as ``lm_calc_perplexity``'s ``ppl``."""

    inputs = {"ppl": "utt2ppl", "ntokens": "utt2ntokens"}

    def score(self, tables: Mapping[str, Table]) -> dict[str, float]:
        total_nll = total_tokens = 0.0
        for utt, ppl in tables["ppl"].items():
            count = int(tables["ntokens"][utt])
            total_nll += count * math.log(float(ppl))
            total_tokens += count
        return {"ppl": math.exp(total_nll / max(total_tokens, 1))}
