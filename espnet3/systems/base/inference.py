"""The contract between the ``infer`` stage and a task family's decoder.

An :class:`Inference` wraps the task's ESPnet2 inference class (``Speech2Text``, ``Text2Speech``,
``SeparateSpeech``, ...). The infer stage builds one per Ray worker (on that worker's device) and
feeds it the test split's items, preprocessed as ESPnet2's inference entry points do
(``build_preprocess_fn(args, train=False)``); it returns, per utterance, the values it declares in
:attr:`Inference.outputs`, which the stage writes in ESPnet2's file formats.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Item = tuple[str, dict[str, np.ndarray]]

# How an output value is written: a `<utt> <value>` line, a 16-bit WAV file, or a .npy file
# (the .scp then holds the file's path).
OUTPUT_KINDS = ("text", "wav", "npy")


# ESPnet2 decoding options with a valid range (checked before Ray, instead of failing after training).
OPTION_RANGES: dict[str, tuple[int | float, int | float | None]] = {
    "beam_size": (1, None), "nbest": (1, None), "batch_size": (1, None),
    "ctc_weight": (0.0, 1.0), "lm_weight": (0.0, None), "ngram_weight": (0.0, None),
}


@dataclass(frozen=True)
class Output:
    """One output an inference produces per utterance, written as ``<infer dir>/<split>/<name>``.

    Attributes:
        name: the file name (ESPnet2's: ``text``, ``token``, ``score``, ``wav.scp``, ...).
        kind: ``text`` (a table line), ``wav`` (audio at :attr:`Inference.sample_rate`) or ``npy``.
    """

    name: str
    kind: str = "text"

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"output kind must be one of {OUTPUT_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class TrainedModel:
    """What a finished run exports for ESPnet2's tools: its ``config.yaml`` and a model file."""

    train_config: Path
    model_file: Path


class Inference(ABC):
    """A task family's decoder (see the module docstring).

    Subclasses name the ESPnet2 class they wrap; options from the train.yaml ``inference:``
    section are that class's keyword arguments, checked against its signature before any
    worker starts (:meth:`check_options`).
    """

    #: dotted path of the ESPnet2 inference class, or None when the family has none.
    espnet2_class: str | None = None
    #: the options of ``inference:`` this wrapper consumes itself (not passed to the class).
    own_options: tuple[str, ...] = ()
    #: what is written per utterance.
    outputs: tuple[Output, ...] = (Output("text"),)
    #: sample rate of ``wav`` outputs.
    sample_rate: int = 16000

    def __init__(self, model: TrainedModel, options: Mapping[str, Any], device: str):
        self.model = model
        self.options = dict(options)
        self.device = device

    @classmethod
    def espnet2_kwargs(cls) -> set[str] | None:
        """The keyword arguments the wrapped ESPnet2 class accepts (None: anything goes)."""
        if cls.espnet2_class is None:
            return set()
        from espnet3.utils.instantiate import import_dotted

        parameters = inspect.signature(import_dotted(cls.espnet2_class).__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return None
        return {name for name in parameters if name != "self"}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` for an ``inference.<key>`` neither this wrapper nor its class takes."""
        accepted = cls.espnet2_kwargs()
        if accepted is None:
            return
        valid = sorted(set(accepted) | set(cls.own_options))
        for key in options:
            if key not in valid:
                import difflib

                close = difflib.get_close_matches(key, valid, n=1)
                hint = f" (did you mean `inference.{close[0]}`?)" if close else ""
                raise ValueError(
                    f"`inference.{key}` is not an option of {cls.espnet2_class or cls.__name__}{hint}; "
                    f"valid: {', '.join(valid)}"
                )
        for key, (low, high) in OPTION_RANGES.items():
            value = options.get(key)
            if value is None:
                continue
            integer = isinstance(low, int)
            ok = (isinstance(value, int) if integer else isinstance(value, (int, float))) and not isinstance(value, bool)
            if not ok or value < low or (high is not None and value > high):
                bound = f">= {low}" if high is None else f"in [{low}, {high}]"
                raise ValueError(f"`inference.{key}` must be {'an integer' if integer else 'a number'} {bound}, "
                                 f"got {value!r}")

    def class_options(self) -> dict[str, Any]:
        """The options passed on to the ESPnet2 class."""
        return {k: v for k, v in self.options.items() if k not in self.own_options}

    @abstractmethod
    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        """Decode ``items``; one dict of :attr:`outputs` values per item, in order."""
