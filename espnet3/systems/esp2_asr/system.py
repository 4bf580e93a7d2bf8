"""``espnet3.systems.esp2_asr.system.ASRSystem``: the base stages plus ``train_tokenizer``, as upstream's."""

from __future__ import annotations

from typing import ClassVar

from espnet3.contract.stages import StageSpec
from espnet3.systems.base.system import BaseSystem


class ASRSystem(BaseSystem):
    """ASR recipes: a sentencepiece tokenizer is trained (``tokenizer:``) before the model."""

    template: ClassVar[str] = "esp2_asr"
    stages: ClassVar[tuple[StageSpec, ...]] = (
        BaseSystem.stages[0],
        StageSpec(name="train_tokenizer", config="training", log_dir="tokenizer.save_path"),
        *BaseSystem.stages[1:],
    )
