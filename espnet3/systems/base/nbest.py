"""Decoders that return ESPnet2's n-best list, ``[(text, token, token_int, hypothesis), ...]``.

ASR's and ST's ``Speech2Text``, MT's ``Text2Text`` and SLU's ``Speech2Understand`` share this
output; the best hypothesis is written as ESPnet2's ``1best_recog`` files (``text``, ``token``,
``token_int``, ``score``). Subclasses name the class, its model arguments and the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from espnet3.systems.base.inference import Inference, Item, Output, TrainedModel
from espnet3.utils.instantiate import import_dotted

NBEST_OUTPUTS = (Output("text"), Output("token"), Output("token_int"), Output("score"))


def best(nbest: list) -> dict[str, Any]:
    text, token, token_int, hyp = nbest[0]
    return {
        "text": text or "",
        "token": " ".join(token),
        "token_int": " ".join(map(str, token_int)),
        "score": float(hyp.score),
    }


class NBestInference(Inference):
    outputs = NBEST_OUTPUTS
    #: the class's keyword arguments for config.yaml and the model file.
    config_argument = "asr_train_config"
    model_argument = "asr_model_file"
    #: the (preprocessed) data stream passed to the decoder.
    input_name = "speech"
    #: defaults of the wrapped class that do not fit espnet3's exported models.
    default_options: dict[str, Any] = {}

    def __init__(self, model: TrainedModel, options: dict[str, Any], device: str):
        super().__init__(model, options, device)
        self.decoder = self.build_decoder()

    def build_decoder(self):
        return import_dotted(self.espnet2_class)(
            **{self.config_argument: str(self.model.train_config), self.model_argument: str(self.model.model_file)},
            device=self.device,
            **{**self.default_options, **self.class_options()},
        )

    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        return [best(self.decoder(data[self.input_name])) for _, data in items]
