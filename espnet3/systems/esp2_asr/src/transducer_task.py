"""``espnet3.systems.esp2_asr.src.transducer_task.ASRTransducerTask``, which egs3 transducer recipes name.

Upstream's module is ESPnet2's ``espnet2.tasks.asr_transducer`` task (the same arguments, models
and checks); this re-exports ESPnet2's, so a transducer recipe's model block builds the same model.
"""

from espnet3.utils.espnet2_imports import import_espnet2

ASRTransducerTask = import_espnet2("espnet2.tasks.asr_transducer").ASRTransducerTask

__all__ = ["ASRTransducerTask"]
