"""Spoken language identification: the LID model's own prediction (ESPnet2 has no inference class).

ESPnet2's lid_inference script calls ``model(..., extract_embd=True)`` and maps the predicted
index to a language by the line order of the training ``lang2utt``; so does this wrapper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from espnet3.systems.base.inference import Inference, Item, Output, TrainedModel
from espnet3.utils.espnet2_imports import import_espnet2


class LIDInference(Inference):
    espnet2_class = None
    outputs = (Output("text"),)

    def __init__(self, model: TrainedModel, options: dict[str, Any], device: str):
        super().__init__(model, options, device)
        task = import_espnet2("espnet2.tasks.lid").LIDTask
        self.lid, args = task.build_model_from_file(model.train_config, model.model_file, device)
        self.lid.eval()
        lines = Path(args.lang2utt).read_text(encoding="utf-8").splitlines()
        self.languages = [line.split()[0] for line in lines if line.strip()]

    @torch.no_grad()
    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        results = []
        for _, data in items:
            speech = torch.as_tensor(data["speech"], dtype=torch.float32)[None].to(self.device)
            lengths = torch.tensor([speech.shape[1]], device=self.device)
            _, predicted = self.lid(speech=speech, speech_lengths=lengths, extract_embd=True)
            results.append({"text": self.languages[int(predicted.reshape(-1)[0])]})
        return results
