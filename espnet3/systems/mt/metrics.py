"""BLEU and chrF with sacrebleu, as ESPnet2's mt.sh / st.sh score translations."""

from __future__ import annotations

from collections.abc import Mapping

from espnet3.systems.base.metric import Metric, Table, aligned


class BLEU(Metric):
    """Corpus BLEU (sacrebleu's 13a tokenizer) and chrF of ``hyp`` against ``ref``, in percent.

    Args:
        lowercase: score case-insensitively, as the ``.lc`` results of mt.sh.
    """

    def __init__(self, lowercase: bool = False, **keys: str):
        super().__init__(**keys)
        self.lowercase = lowercase

    def score(self, tables: Mapping[str, Table]) -> dict[str, float]:
        import sacrebleu

        rows = aligned(tables["hyp"], tables["ref"], "translation")
        hyps, refs = [h for _, h, _ in rows], [r for _, _, r in rows]
        bleu = sacrebleu.corpus_bleu(hyps, [refs], lowercase=self.lowercase)
        chrf = sacrebleu.corpus_chrf(hyps, [refs])
        return {"bleu": float(bleu.score), "chrf": float(chrf.score)}
