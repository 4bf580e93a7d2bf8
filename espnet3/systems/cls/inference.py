"""Audio classification: ESPnet2's ``Classification`` (the predicted class names and their score)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from espnet3.systems.base.inference import Inference, Item, Output, TrainedModel
from espnet3.utils.instantiate import import_dotted


class CLSInference(Inference):
    espnet2_class = "espnet2.bin.cls_inference.Classification"
    outputs = (Output("text"), Output("score"))

    def __init__(self, model: TrainedModel, options: dict[str, Any], device: str):
        super().__init__(model, options, device)
        self.classify = import_dotted(self.espnet2_class)(
            classification_train_config=str(model.train_config),
            classification_model_file=str(model.model_file),
            device=device,
            **self.class_options(),
        )

    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        results = []
        for _, data in items:
            prediction, scores, names = self.classify(data["speech"])
            results.append({"text": names, "score": float(scores[prediction].max()) if prediction else 0.0})
        return results
