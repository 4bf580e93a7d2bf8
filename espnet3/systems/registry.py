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
    """

    inference: str
    metrics: tuple[dict, ...]

    def inference_class(self) -> type:
        return import_dotted(self.inference)


def _metric(path: str, **options) -> dict:
    return {"_target_": path, **options}


_ERROR_RATES = (_metric("espnet3.systems.asr.metrics.CER"), _metric("espnet3.systems.asr.metrics.WER"))
_BLEU = (_metric("espnet3.systems.mt.metrics.BLEU"),)
_TTS = System("espnet3.systems.tts.inference.TTSInference", (_metric("espnet3.systems.tts.metrics.MCD"),))

SYSTEMS: dict[str, System] = {
    "ASRTask": System("espnet3.systems.asr.inference.ASRInference", _ERROR_RATES),
    "STTask": System("espnet3.systems.st.inference.STInference", _BLEU),
    "MTTask": System("espnet3.systems.mt.inference.MTInference", _BLEU),
    "LMTask": System("espnet3.systems.lm.inference.LMInference", (_metric("espnet3.systems.lm.metrics.Perplexity"),)),
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
        "espnet3.systems.cls.inference.CLSInference", (_metric("espnet3.systems.base.classification.Accuracy"),)
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
