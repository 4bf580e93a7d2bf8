"""Which decoder and which metrics each ESPnet2 task family gets in the infer and measure stages.

Keyed by the ESPnet2 task class, so a recipe name (``asr1``), a dotted path and a subclass
(``espnet3.systems.asr.task.ASRTask``) all find the same system.
"""

from __future__ import annotations

from dataclasses import dataclass

from espnet3.utils.instantiate import import_dotted


@dataclass(frozen=True)
class System:
    """A task family's infer/measure side.

    Attributes:
        inference: dotted path of its :class:`espnet3.systems.base.inference.Inference`.
        metrics: the default ``metrics:`` blocks (``_target_`` + options).
        packed_as: the ESPnet2 inference class's argument names for the config and the model
            file, which a packed model's ``meta.yaml`` uses (ESPnet2's ``espnet2.bin.pack`` names).
    """

    inference: str
    metrics: tuple[dict, ...]
    packed_as: tuple[str, str] = ("train_config", "model_file")

    def inference_class(self) -> type:
        return import_dotted(self.inference)


def _metric(path: str, **options) -> dict:
    return {"_target_": path, **options}


_ERROR_RATES = (_metric("espnet3.systems.asr.metrics.CER"), _metric("espnet3.systems.asr.metrics.WER"))
_BLEU = (_metric("espnet3.systems.mt.metrics.BLEU"),)
_TTS = System("espnet3.systems.tts.inference.TTSInference", (_metric("espnet3.systems.tts.metrics.MCD"),))

SYSTEMS: dict[str, System] = {
    "ASRTask": System(
        "espnet3.systems.asr.inference.ASRInference", _ERROR_RATES, ("asr_train_config", "asr_model_file")
    ),
    "ASRTransducerTask": System(
        "espnet3.systems.asr.inference.ASRTransducerInference", _ERROR_RATES, ("asr_train_config", "asr_model_file")
    ),
    "STTask": System("espnet3.systems.st.inference.STInference", _BLEU, ("st_train_config", "st_model_file")),
    "MTTask": System("espnet3.systems.mt.inference.MTInference", _BLEU, ("mt_train_config", "mt_model_file")),
    "LMTask": System(
        "espnet3.systems.lm.inference.LMInference",
        (_metric("espnet3.systems.lm.metrics.Perplexity"),),
        ("lm_train_config", "lm_file"),
    ),
    "TTSTask": _TTS,
    "GANTTSTask": _TTS,
    "EnhancementTask": System(
        "espnet3.systems.enh.inference.EnhInference", (_metric("espnet3.systems.enh.metrics.SISNRImprovement"),)
    ),
    "LIDTask": System(
        "espnet3.systems.lid.inference.LIDInference",
        (_metric("espnet3.systems.base.classification.Accuracy", ref_key="dataset:lid_labels"),),
    ),
    "SpeakerTask": System("espnet3.systems.spk.inference.SpeakerInference", (_metric("espnet3.systems.spk.metrics.EER"),)),
    "CLSTask": System(
        "espnet3.systems.cls.inference.CLSInference",
        (_metric("espnet3.systems.base.classification.Accuracy"),),
        ("classification_train_config", "classification_model_file"),
    ),
    "GANCodecTask": System(
        "espnet3.systems.codec.inference.CodecInference", (_metric("espnet3.systems.codec.metrics.Resynthesis"),)
    ),
}


def system_for(task_cls: type) -> System:
    """The system of ``task_cls`` (or of the nearest ESPnet2 base class that has one)."""
    for cls in task_cls.__mro__:
        if cls.__name__ in SYSTEMS:
            return SYSTEMS[cls.__name__]
    raise ValueError(
        f"the infer and measure stages have no decoder for {task_cls.__module__}.{task_cls.__name__} yet; "
        f"supported task families: {', '.join(sorted(SYSTEMS))}. Leave infer/measure out of --stages."
    )
