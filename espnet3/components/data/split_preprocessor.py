"""A preprocessor per split, as an egs3 recipe's ``dataset.preprocessor: {train: ..., valid: ...}`` gives them.

This project's data layer calls one preprocessor block with ``train=True`` for the training split
and ``train=False`` for the others; an egs3 recipe may give the training split its own class or
options (augmentation) and the others theirs. :class:`SplitPreprocessors` is that one block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from espnet3.utils.espnet2_imports import import_espnet2
from espnet3.utils.instantiate import import_dotted, instantiate

AbsPreprocessor = import_espnet2("espnet2.train.preprocessor").AbsPreprocessor


def build(block: Mapping[str, Any], train: bool):
    """A ``{_target_: ...}`` block; an ESPnet2 ``AbsPreprocessor`` gets ``train`` (set by the split,
    as upstream's organizer sets it), any other callable is built as written."""
    target = import_dotted(str(block["_target_"]))
    if isinstance(target, type) and issubclass(target, AbsPreprocessor):
        return instantiate({**block, "train": train})
    return instantiate(dict(block))


class SplitPreprocessors(AbsPreprocessor):
    """``train_preprocessor`` for the training split, ``eval_preprocessor`` for the others."""

    def __init__(self, train: bool, train_preprocessor: Mapping[str, Any], eval_preprocessor: Mapping[str, Any]):
        super().__init__(train)
        self.delegate = build(train_preprocessor if train else eval_preprocessor, train)

    def __call__(self, uid: str, data: dict) -> dict:
        return self.delegate(uid, data)
