"""``Field``: one named value of a declared kind, as upstream ESPnet3's recipes declare dataset items.

A recipe's dataset says what its items hold (``fields = (Field("speech", "audio"), Field("text",
"text"))``); :class:`~espnet3.components.data.base_dataset.BaseDataset` checks the first item
against that. Only the kinds' item checks are kept here: upstream's conversions (resampling,
normalizers) serve its inference front ends, which this project does not offer.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _is_audio(value: Any) -> bool:
    """Samples (array or tensor), a path, or a ``(rate, samples)`` pair, as upstream's audio kind takes."""
    if isinstance(value, (str, Path, np.ndarray)) or hasattr(value, "detach"):
        return True
    return isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], (int, np.integer))


def _is_segments(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(s, Mapping) and {"text", "start", "end"} <= set(s) for s in value
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


# Upstream's built-in kinds, each with the test an item's value must pass.
KINDS: dict[str, Callable[[Any], bool]] = {
    "audio": _is_audio,
    "text": lambda value: isinstance(value, str),
    "segments": _is_segments,
    "number": _is_number,
}


@dataclass(frozen=True)
class Field:
    """One value an item holds: ``Field("speech", "audio")``.

    Attributes:
        name: the item key, a Python identifier.
        kind: one of :data:`KINDS` (``audio``, ``text``, ``segments``, ``number``).
        label: the display name; defaults to the name with spaces, capitalised.
        optional: an item may leave the field out.
        channels: the audio channel count required, or ``None`` for any.
        options: kind-specific settings, kept for upstream's signature (nothing here reads them).
    """

    name: str
    kind: str
    label: str = ""
    optional: bool = False
    channels: int | None = None
    options: Mapping[str, Any] = dataclass_field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Field {self.name!r} has kind {self.kind!r}; use one of {sorted(KINDS)}")
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Field name {self.name!r} must be a Python identifier, such as 'speech'")
        if self.channels is not None and self.channels < 1:
            raise ValueError(f"Field {self.name!r}: channels must be None (any) or at least 1")
        if not isinstance(self.options, Mapping):
            raise TypeError(f"Field {self.name!r}: options must be a mapping, not {type(self.options).__name__}")
        if not self.label:
            object.__setattr__(self, "label", self.name.replace("_", " ").capitalize())

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` can hold this field's kind."""
        return KINDS[self.kind](value)
