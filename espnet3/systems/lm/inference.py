"""Language-model perplexity, as ESPnet2's ``lm_calc_perplexity``: batched ``model.nll``.

Writes ESPnet2's ``utt2ppl`` and ``utt2ntokens`` (the end-of-sentence token counts, so
``ntokens`` is the text length + 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from espnet3.systems.base.inference import Inference, Item, Output, TrainedModel
from espnet3.utils.espnet2_imports import import_espnet2


class LMInference(Inference):
    espnet2_class = None
    outputs = (Output("utt2ppl"), Output("utt2ntokens"))

    def __init__(self, model: TrainedModel, options: dict[str, Any], device: str):
        super().__init__(model, options, device)
        task = import_espnet2("espnet2.tasks.lm").LMTask
        self.lm, _ = task.build_model_from_file(model.train_config, model.model_file, device)
        self.lm.eval()

    @torch.no_grad()
    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        texts = [torch.as_tensor(data["text"], dtype=torch.long) for _, data in items]
        lengths = torch.tensor([len(t) for t in texts])
        padded = torch.nn.utils.rnn.pad_sequence(texts, batch_first=True, padding_value=0)
        nll, ntokens = self.lm.nll(padded.to(self.device), lengths.to(self.device))
        results = []
        for i in range(len(items)):
            total, count = float(nll[i].sum()), int(ntokens[i])
            results.append({"utt2ppl": math.exp(total / count), "utt2ntokens": count})
        return results
