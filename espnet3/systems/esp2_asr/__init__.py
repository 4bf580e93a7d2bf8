"""Upstream ESPnet3's ASR system (``espnet3.systems.esp2_asr``): ESPnet2's ASR task under egs3 recipes."""
