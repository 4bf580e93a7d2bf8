"""Neural audio codecs: ESPnet2's ``AudioCoding`` (encode to codes, decode back)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from espnet3.systems.base.inference import Inference, Item, Output, TrainedModel
from espnet3.utils.instantiate import import_dotted


class CodecInference(Inference):
    espnet2_class = "espnet2.bin.gan_codec_inference.AudioCoding"
    outputs = (Output("wav.scp", "wav"),)

    def __init__(self, model: TrainedModel, options: dict[str, Any], device: str):
        super().__init__(model, options, device)
        self.codec = import_dotted(self.espnet2_class)(
            train_config=str(model.train_config), model_file=str(model.model_file), device=device,
            **self.class_options(),
        )
        self.rate = int(self.codec.model.meta_info()["fs"]) if hasattr(self.codec.model, "meta_info") else 16000

    @torch.no_grad()
    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        results = []
        for _, data in items:
            out = self.codec(torch.as_tensor(data["audio"], dtype=torch.float32))
            results.append({"wav.scp": (np.asarray(out["resyn_audio"].cpu()).reshape(-1), self.rate)})
        return results
