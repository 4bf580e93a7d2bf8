"""Equal error rate and minimum detection cost of verification trials (ESPnet2's ``espnet2.utils.eer``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from espnet3.systems.base.metric import Metric, Table, aligned
from espnet3.utils.espnet2_imports import import_espnet2


class EER(Metric):
    """EER (%) and minDCF (p_target 0.05, c_miss = c_fa = 1), as ESPnet2's spk recipes report them."""

    inputs = {"score": "score", "label": "dataset:spk_labels"}

    def __init__(self, p_target: float = 0.05, **keys: str):
        super().__init__(**keys)
        self.p_target = p_target

    def score(self, tables: Mapping[str, Table]) -> dict[str, float]:
        eer = import_espnet2("espnet2.utils.eer")
        rows = aligned(tables["score"], tables["label"], "trial score")
        scores = np.array([float(s) for _, s, _ in rows])
        labels = np.array([int(label) for _, _, label in rows])
        if len(set(labels)) < 2:
            raise ValueError("EER needs both target (1) and non-target (0) trials in the trial labels")
        _, eer_percent, _, _ = eer.tuneThresholdfromScore(scores, labels, [1, 0.1])
        fnrs, fprs, thresholds = eer.ComputeErrorRates(scores, labels)
        min_dcf, _ = eer.ComputeMinDcf(fnrs, fprs, thresholds, self.p_target, 1, 1)
        return {"eer": float(eer_percent), "min_dcf": float(min_dcf)}
