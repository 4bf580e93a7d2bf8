"""Resynthesis quality of a codec: SI-SNR and mel-cepstral distortion against the input audio."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from espnet3.systems.base.audio import mcd_dtw, read_audio, si_snr
from espnet3.systems.base.metric import Metric, Table, aligned


class Resynthesis(Metric):
    inputs = {"hyp": "wav.scp", "ref": "dataset:audio"}

    def score(self, tables: Mapping[str, Table]) -> dict[str, float]:
        snr, mcd = [], []
        for _, hyp_path, ref_path in aligned(tables["hyp"], tables["ref"], "resynthesised wav"):
            hyp, rate = read_audio(hyp_path)
            ref, _ = read_audio(ref_path)
            snr.append(si_snr(hyp, ref))
            mcd.append(mcd_dtw(hyp, ref, rate))
        return {"si_snr": float(np.mean(snr)), "mcd": float(np.mean(mcd))}
