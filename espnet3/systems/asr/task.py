"""``espnet3.systems.asr.task.ASRTask``: the ASR task under upstream ESPnet3's import path.

A re-export, not a fork: ESPnet2's ``ASRTask`` already builds every ASR model, and a
second copy would drift from the ``config.yaml`` files ESPnet2's inference tools read.
"""

from espnet3.utils.espnet2_imports import import_espnet2

ASRTask = import_espnet2("espnet2.tasks.asr").ASRTask

__all__ = ["ASRTask"]
