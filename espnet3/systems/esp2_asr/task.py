"""``espnet3.systems.esp2_asr.task.ASRTask``, the task egs3 ASR recipes name: ESPnet2's, re-exported."""

from espnet3.systems.asr.task import ASRTask

__all__ = ["ASRTask"]
