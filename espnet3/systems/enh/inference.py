"""Speech enhancement / separation: ESPnet2's ``SeparateSpeech``, one utterance per call.

Writes ESPnet2's ``spk1.scp`` (``spk2.scp``, ... for separation) with a WAV file per utterance
at the model's sample rate (``inference.fs``, default 16000).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from espnet3.systems.base.inference import Inference, Item, Output, TrainedModel
from espnet3.utils.instantiate import import_dotted

MAX_SPEAKERS = 4


class EnhInference(Inference):
    espnet2_class = "espnet2.bin.enh_inference.SeparateSpeech"
    own_options = ("fs",)
    outputs = tuple(Output(f"spk{k}.scp", "wav") for k in range(1, MAX_SPEAKERS + 1))

    def __init__(self, model: TrainedModel, options: dict[str, Any], device: str):
        super().__init__(model, options, device)
        self.fs = int(self.options.get("fs", 16000))
        self.separate = import_dotted(self.espnet2_class)(
            train_config=str(model.train_config), model_file=str(model.model_file), device=device,
            **self.class_options(),
        )

    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        results = []
        for _, data in items:
            separated = self.separate(np.asarray(data["speech_mix"])[None], fs=self.fs)
            results.append({f"spk{k + 1}.scp": (np.asarray(wav)[0], self.fs) for k, wav in enumerate(separated)})
        return results
