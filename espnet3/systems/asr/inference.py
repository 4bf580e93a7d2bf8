"""ASR decoding: ESPnet2's ``Speech2Text`` beam search, or greedy CTC for speed.

``inference.decoder: beam_search`` (default) runs ``espnet2.bin.asr_inference.Speech2Text``
with the ``inference:`` options as its keyword arguments (``beam_size``, ``ctc_weight``,
``lm_weight``, ``lm_train_config``/``lm_file``, ``nbest``, ...), one utterance per call as
ESPnet2 does. ``decoder: greedy_ctc`` collapses the CTC argmax of a whole padded batch
(``inference.batch_size`` utterances): no decoder, no LM, many times faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from espnet3.systems.base.inference import Item
from espnet3.systems.base.nbest import NBestInference
from espnet3.utils.espnet2_imports import import_espnet2
from espnet3.utils.instantiate import import_dotted

DECODERS = ("beam_search", "greedy_ctc")
BLANK_ID = 0


def greedy_ctc(best_path: torch.Tensor, length: int) -> list[int]:
    """Collapse repeats, drop blanks."""
    out, previous = [], None
    for token in best_path[:length].tolist():
        if token != previous and token != BLANK_ID:
            out.append(token)
        previous = token
    return out


class ASRInference(NBestInference):
    espnet2_class = "espnet2.bin.asr_inference.Speech2Text"
    own_options = ("decoder",)

    @classmethod
    def check_options(cls, options) -> None:
        super().check_options(options)
        if options.get("decoder", "beam_search") not in DECODERS:
            raise ValueError(
                f"`inference.decoder` must be one of {', '.join(DECODERS)}, got {options['decoder']!r}"
            )

    def build_decoder(self):
        self.decoder_type = self.options.get("decoder", "beam_search")
        if self.decoder_type == "greedy_ctc":
            self._build_greedy()
            return None
        self._clip_beam()
        return super().build_decoder()

    def _clip_beam(self) -> None:
        """A beam wider than the vocabulary cannot be filled (ESPnet2's beam search fails in topk with
        "selected index k out of range"): decode with a beam of the vocabulary's size, and say so."""
        import inspect
        import warnings

        import yaml

        with open(self.model.train_config, encoding="utf-8") as f:
            token_list = yaml.safe_load(f).get("token_list")
        if isinstance(token_list, str):
            with open(token_list, encoding="utf-8") as f:
                token_list = [line for line in f.read().splitlines() if line]
        default = inspect.signature(import_dotted(self.espnet2_class)).parameters["beam_size"].default
        beam = self.options.get("beam_size", default)
        if token_list and beam > len(token_list):
            warnings.warn(f"inference.beam_size {beam} is wider than the {len(token_list)}-token vocabulary: "
                          f"decoding with beam_size {len(token_list)}", stacklevel=2)
            self.options = {**self.options, "beam_size": len(token_list)}

    def _build_greedy(self) -> None:
        task = import_espnet2("espnet2.tasks.asr").ASRTask
        self.asr_model, args = task.build_model_from_file(self.model.train_config, self.model.model_file, self.device)
        self.asr_model.eval()
        if getattr(self.asr_model, "ctc", None) is None:
            raise TypeError("`inference.decoder: greedy_ctc` needs a model with a CTC branch (ctc_weight > 0)")
        build_tokenizer = import_espnet2("espnet2.text.build_tokenizer").build_tokenizer
        converter = import_espnet2("espnet2.text.token_id_converter").TokenIDConverter
        self.converter = converter(args.token_list)
        self.tokenizer = build_tokenizer(
            token_type=args.token_type, bpemodel=args.bpemodel if args.token_type == "bpe" else None
        )

    @torch.no_grad()
    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        if self.decoder_type == "greedy_ctc":
            return self._greedy(items)
        return super().__call__(items)

    def _greedy(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        speech = [torch.as_tensor(data["speech"], dtype=torch.float32) for _, data in items]
        lengths = torch.tensor([len(s) for s in speech])
        padded = torch.nn.utils.rnn.pad_sequence(speech, batch_first=True).to(self.device)
        encoded, encoded_lengths = self.asr_model.encode(padded, lengths.to(self.device))
        log_probs = self.asr_model.ctc.log_softmax(encoded)
        best_path = log_probs.argmax(-1)
        results = []
        for i in range(len(items)):
            ids = greedy_ctc(best_path[i], int(encoded_lengths[i]))
            tokens = self.converter.ids2tokens(ids)
            score = float(log_probs[i, : int(encoded_lengths[i])].max(-1).values.sum())
            results.append({
                "text": self.tokenizer.tokens2text(tokens),
                "token": " ".join(tokens),
                "token_int": " ".join(map(str, ids)),
                "score": score,
            })
        return results


class ASRTransducerInference(NBestInference):
    """ESPnet2's transducer ``Speech2Text`` (``espnet2.bin.asr_transducer_inference``): its beam
    search over the joint network, for models of ``espnet2.tasks.asr_transducer`` (egs3's
    ``esp2_asr.src.transducer_task.ASRTransducerTask``), with the n-best list of the other
    families (``return_decoded_hyp``)."""

    espnet2_class = "espnet2.bin.asr_transducer_inference.Speech2Text"
    default_options = {"return_decoded_hyp": True}
