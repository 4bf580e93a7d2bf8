"""Upstream ESPnet3's ASR task variants at their import paths (``esp2_asr.src.transducer_task``)."""
