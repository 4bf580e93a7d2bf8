"""``espnet3.systems.esp2_asr.metrics.wer.WER``: word error rate (:class:`espnet3.systems.asr.metrics.WER`)."""

from espnet3.systems.asr.metrics import WER

__all__ = ["WER"]
