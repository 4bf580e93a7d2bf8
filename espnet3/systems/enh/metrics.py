"""Enhancement quality: SI-SNR and SDR of the output, and their improvement over the noisy input."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from espnet3.systems.base.audio import read_audio, si_snr
from espnet3.systems.base.metric import Metric, Table, aligned


class SISNRImprovement(Metric):
    """Mean SI-SNR (dB) of ``hyp`` against the clean ``ref``, of the mixture, and the improvement;
    SDR likewise (BSS-eval SDR from ``fast_bss_eval``, which ESPnet2's enhancement losses use)."""

    inputs = {"hyp": "spk1.scp", "ref": "dataset:speech_ref1", "mix": "dataset:speech_mix"}

    def score(self, tables: Mapping[str, Table]) -> dict[str, float]:
        import fast_bss_eval

        values: dict[str, list[float]] = {"si_snr": [], "si_snr_mix": [], "sdr": [], "sdr_mix": []}
        for utt, hyp_path, ref_path in aligned(tables["hyp"], tables["ref"], "enhanced output"):
            hyp, _ = read_audio(hyp_path)
            ref, _ = read_audio(ref_path)
            mix, _ = read_audio(tables["mix"][utt])
            n = min(len(hyp), len(ref), len(mix))
            hyp, ref, mix = hyp[:n], ref[:n], mix[:n]
            values["si_snr"].append(si_snr(hyp, ref))
            values["si_snr_mix"].append(si_snr(mix, ref))
            values["sdr"].append(float(fast_bss_eval.sdr(ref[None], hyp[None])[0]))
            values["sdr_mix"].append(float(fast_bss_eval.sdr(ref[None], mix[None])[0]))
        means = {k: float(np.mean(v)) for k, v in values.items()}
        means["si_snr_improvement"] = means["si_snr"] - means["si_snr_mix"]
        means["sdr_improvement"] = means["sdr"] - means["sdr_mix"]
        return means
