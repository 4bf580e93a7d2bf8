"""``espnet3.systems.esp2_asr.metrics.cer.CER``: character error rate (:class:`espnet3.systems.asr.metrics.CER`)."""

from espnet3.systems.asr.metrics import CER

__all__ = ["CER"]
