"""Text-to-speech: ESPnet2's ``Text2Speech`` (Griffin-Lim without a vocoder; GAN models make waves).

Writes ESPnet2's ``wav.scp`` plus a WAV per utterance at the model's own rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from espnet3.systems.base.inference import Inference, Item, Output, TrainedModel
from espnet3.utils.instantiate import import_dotted


class TTSInference(Inference):
    espnet2_class = "espnet2.bin.tts_inference.Text2Speech"
    outputs = (Output("wav.scp", "wav"),)

    def __init__(self, model: TrainedModel, options: dict[str, Any], device: str):
        super().__init__(model, options, device)
        self.text2speech = import_dotted(self.espnet2_class)(
            train_config=str(model.train_config), model_file=str(model.model_file), device=device,
            **self.class_options(),
        )

    @torch.no_grad()
    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        results = []
        for _, data in items:
            wav = self.text2speech(torch.as_tensor(data["text"], dtype=torch.long))["wav"]
            results.append({"wav.scp": (np.asarray(wav.cpu()).reshape(-1), int(self.text2speech.fs))})
        return results
