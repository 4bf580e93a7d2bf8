"""How good synthesised speech is: spectral distance to the recording, and intelligibility."""

from __future__ import annotations

import json
import warnings
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
        asr_exp_dir: a finished espnet3 ASR run (its ``config.yaml`` and averaged model), e.g.
            ``exp/asr1`` from ``configs/tasks/asr1.yaml`` or ``exp/digits_asr`` (the default job).
        required: without the ASR run, fail (true) or report ``null`` with a warning (false).
        beam_size, ctc_weight: decoding options of the ASR.
        case_sensitive: compare letter case too (off: TTS texts are often lower-cased).
    """

    inputs = {"hyp": "wav.scp", "ref": "dataset:text"}

    def __init__(self, asr_exp_dir: str, required: bool = True, beam_size: int = 5, ctc_weight: float = 0.5,
                 case_sensitive: bool = False, **keys: str):
        super().__init__(**keys)
        self.asr_exp_dir = Path(asr_exp_dir)
        self.model = self._find_model(required)
        self.options = {"beam_size": beam_size, "ctc_weight": ctc_weight}
        self.case_sensitive = case_sensitive

    def _find_model(self, required: bool) -> tuple[Path, Path] | None:
        result = self.asr_exp_dir / "train_result.json"
        config = self.asr_exp_dir / "config.yaml"
        if result.is_file() and config.is_file():
            model = Path(json.loads(result.read_text())["averaged_model"])
            if model.is_file():
                return config, model
        message = (
            f"IntelligibilityCER needs a trained ASR run in {self.asr_exp_dir} (config.yaml, train_result.json "
            "and its averaged model); train one first, e.g. python -m espnet3.launch --config configs/tasks/asr1.yaml"
        )
        if required:
            raise FileNotFoundError(message)
        warnings.warn(message + "; intelligibility_cer is left out (null)", stacklevel=3)
        return None

    def score(self, tables: Mapping[str, Table]) -> dict[str, float | None]:
        if self.model is None:
            return {"intelligibility_cer": None}
        import editdistance
        import librosa

        from espnet3.utils.espnet2_imports import import_espnet2

        config, model = self.model
        too_short = import_espnet2("espnet.nets.pytorch_backend.transformer.subsampling").TooShortUttError
        speech2text = import_espnet2("espnet2.bin.asr_inference").Speech2Text(
            asr_train_config=str(config), asr_model_file=str(model), **self.options
        )
        rate = int(getattr(speech2text.asr_model.frontend, "fs", 16000))
        errors = total = 0
        for _, hyp_path, ref in aligned(tables["hyp"], tables["ref"], "synthesised wav"):
            audio, audio_rate = read_audio(hyp_path)
            if audio_rate != rate:
                audio = librosa.resample(audio, orig_sr=audio_rate, target_sr=rate)
            try:
                text = speech2text(audio.astype(np.float32))[0][0] or ""
            except too_short:  # a few frames of audio: nothing intelligible, every reference char an error
                text = ""
            if not self.case_sensitive:
                text, ref = text.lower(), ref.lower()
            ref_chars = list(" ".join(ref.split()))
            errors += editdistance.eval(list(" ".join(text.split())), ref_chars)
            total += len(ref_chars)
        return {"intelligibility_cer": errors / max(total, 1)}
