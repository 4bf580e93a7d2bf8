"""Speaker verification scores of ESPnet2 trials, as ESPnet2's speaker trainer scores them.

The test split is given like spk.sh's validation data: ``trial.scp`` (``speech``), ``trial2.scp``
(``speech2``) and ``trial_label`` (``spk_labels``), keyed ``<enroll>*<test>``. The speaker
preprocessor cuts each side into ``num_eval`` windows; both are embedded, L2-normalised, and the
trial's score is the negative mean distance between the two sets of windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from espnet3.systems.base.inference import Inference, Item, Output, TrainedModel
from espnet3.utils.espnet2_imports import import_espnet2


class SpeakerInference(Inference):
    espnet2_class = None
    outputs = (Output("score"),)

    def __init__(self, model: TrainedModel, options: dict[str, Any], device: str):
        super().__init__(model, options, device)
        task = import_espnet2("espnet2.tasks.spk").SpeakerTask
        self.spk, _ = task.build_model_from_file(model.train_config, model.model_file, device)
        self.spk.eval()

    def _embed(self, windows) -> torch.Tensor:
        speech = torch.as_tensor(windows, dtype=torch.float32).to(self.device)
        speech = speech.reshape(-1, speech.shape[-1])  # (num_eval, T)
        embedding = self.spk(speech=speech, spk_labels=None, extract_embd=True)
        return torch.nn.functional.normalize(embedding, p=2, dim=1)

    @torch.no_grad()
    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        results = []
        for _, data in items:
            enroll, test = self._embed(data["speech"]), self._embed(data["speech2"])
            results.append({"score": float(-torch.cdist(enroll, test).mean())})
        return results
