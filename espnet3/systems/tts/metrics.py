"""How good synthesised speech is: spectral distance to the recording, and intelligibility."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from espnet3.systems.base.audio import mcd_dtw, read_audio
from espnet3.systems.base.metric import Metric, Table, aligned


class MCD(Metric):
    """Mean mel-cepstral distortion (dB, DTW-aligned) of ``hyp`` against the recorded ``ref``."""

    inputs = {"hyp": "wav.scp", "ref": "dataset:speech"}

    def score(self, tables: Mapping[str, Table]) -> dict[str, float]:
        values = []
        for _, hyp_path, ref_path in aligned(tables["hyp"], tables["ref"], "synthesised wav"):
            hyp, rate = read_audio(hyp_path)
            ref, ref_rate = read_audio(ref_path)
            if rate != ref_rate:
                import librosa

                hyp = librosa.resample(hyp, orig_sr=rate, target_sr=ref_rate)
            values.append(mcd_dtw(hyp, ref, ref_rate))
        return {"mcd": float(np.mean(values))}


class IntelligibilityCER(Metric):
    """CER of an ASR model's transcript of the synthesised speech against the input text.

    Args:
        asr_train_config, asr_model_file: an ESPnet2 ASR model, e.g. ``exp/digits_asr/config.yaml``
            and ``exp/digits_asr/valid.loss.ave_3best.pth`` from this project's default job.
        beam_size, ctc_weight: its decoding options.
        case_sensitive: compare letter case too (off: TTS texts are often lower-cased).
    """

    inputs = {"hyp": "wav.scp", "ref": "dataset:text"}

    def __init__(self, asr_train_config: str, asr_model_file: str, beam_size: int = 5, ctc_weight: float = 0.5,
                 case_sensitive: bool = False, **keys: str):
        super().__init__(**keys)
        for path in (asr_train_config, asr_model_file):
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"IntelligibilityCER needs an ASR model: {path} does not exist (train one first, e.g. "
                    "`python -m espnet3.launch --config configs/digits_asr.yaml`, or drop this metric)"
                )
        self.asr = dict(asr_train_config=asr_train_config, asr_model_file=asr_model_file, beam_size=beam_size,
                        ctc_weight=ctc_weight)
        self.case_sensitive = case_sensitive

    def score(self, tables: Mapping[str, Table]) -> dict[str, float]:
        import editdistance
        import librosa

        from espnet3.utils.espnet2_imports import import_espnet2

        speech2text = import_espnet2("espnet2.bin.asr_inference").Speech2Text(**self.asr)
        rate = int(speech2text.asr_model.frontend.fs) if hasattr(speech2text.asr_model.frontend, "fs") else 16000
        errors = total = 0
        for _, hyp_path, ref in aligned(tables["hyp"], tables["ref"], "synthesised wav"):
            audio, audio_rate = read_audio(hyp_path)
            if audio_rate != rate:
                audio = librosa.resample(audio, orig_sr=audio_rate, target_sr=rate)
            text = speech2text(audio.astype(np.float32))[0][0] or ""
            if not self.case_sensitive:
                text, ref = text.lower(), ref.lower()
            ref_chars = list(" ".join(ref.split()))
            errors += editdistance.eval(list(" ".join(text.split())), ref_chars)
            total += len(ref_chars)
        return {"intelligibility_cer": errors / max(total, 1)}
