"""Upstream's ASR metric paths (``metrics.wer.WER``, ``metrics.cer.CER``), scored by :mod:`espnet3.systems.asr.metrics`."""
