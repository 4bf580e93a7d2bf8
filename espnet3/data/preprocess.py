"""How raw items become model inputs and batches: the task's own ESPnet2 functions.

With ``task:`` set, the preprocessor is the task's ``build_preprocess_fn(args, train)`` and the
collation its ``build_collate_fn(args, train)``, from the same ESPnet2 args the model is built
from (task defaults, ``model:``, ``preprocessor:``). ``preprocessor: {_target_: ...}`` names any
``AbsPreprocessor`` instead. Without a task, text is tokenized with ESPnet2's
``CommonPreprocessor`` from ``data.token_*`` (when the data has text) and batches are collated
with ``CommonCollateFn``.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espnet3.utils.espnet2_imports import import_espnet2
from espnet3.utils.instantiate import instantiate


# ESPnet2 TTS models that train on given phoneme durations.
DURATION_TTS = ("fastspeech", "fastspeech2")


def _file_stamp(value: Any) -> Any:
    """A path's size and mtime, so a changed file (a retrained bpe model) changes the fingerprint."""
    if isinstance(value, str) and value and Path(value).is_file():
        stat = Path(value).stat()
        return [value, stat.st_size, stat.st_mtime_ns]
    return value


@dataclass(frozen=True)
class PreprocessSpec:
    """The preprocessing and collation of a run (picklable: it travels to Ray workers).

    Attributes:
        task: the ESPnet2 task (recipe name or class path), or ``None`` for ``_target_`` models.
        args: the task's ESPnet2 args (token lists read), with ``task``.
        target: a ``{_target_: ...}`` AbsPreprocessor block (called with ``train=``).
        common: without a task: ``CommonPreprocessor`` keyword arguments, or ``None`` (no text).
        keys: the preprocessing option names in ``args``; they define the fingerprint.
    """

    task: str | None = None
    args: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    common: dict[str, Any] | None = None
    keys: tuple[str, ...] = ()

    def _task_cls(self) -> type:
        from espnet3.utils.task_utils import resolve_task

        return resolve_task(self.task)

    def preprocess_fn(self, train: bool) -> Callable | None:
        """``(utt_id, arrays) -> arrays``; ``train`` turns on augmentation (noise, RIR, ...)."""
        if self.target is not None:
            return instantiate(self.target, train=train)
        if self.task is not None:
            return self._task_cls().build_preprocess_fn(argparse.Namespace(**self.args), train)
        if self.common is not None:
            preprocessor = import_espnet2("espnet2.train.preprocessor").CommonPreprocessor
            return preprocessor(train=train, **self.common)
        return None

    def sample_rate(self) -> int | None:
        """The audio rate ESPnet2's args give (``fs``, or the frontend's ``fs``; its default frontend
        assumes 16 kHz), for speech units in the progress line; ``None`` for a run without a
        frontend or an ``fs`` (text tasks, ``_target_`` models)."""
        args = self.args or {}
        fs = args.get("fs") or (args.get("frontend_conf") or {}).get("fs")
        if fs is None and args.get("frontend") == "default":
            fs = 16000
        if isinstance(fs, str):  # ESPnet2 also takes "16k"
            fs = float(fs[:-1]) * 1000 if fs.lower().endswith("k") else float(fs)
        return int(fs) if fs else None

    def collate_fn(self, train: bool) -> Callable:
        if self.task is not None:
            return self._task_cls().build_collate_fn(argparse.Namespace(**self.args), train)
        return import_espnet2("espnet2.train.collate_fn").CommonCollateFn(float_pad_value=0.0, int_pad_value=-1)

    def required_names(self, train: bool, inference: bool) -> tuple[str, ...]:
        """The data names the task needs (``required_data_names``); none without a task.

        ESPnet2 lists only ``speech_ref1`` for enhancement, yet a separator for N speakers asserts
        in its first forward that ``speech_ref1..N`` all came; and FastSpeech/FastSpeech2 train on
        a teacher's ``durations`` (tts.sh's ``--teacher_dumpdir``), which TTS lists as optional.
        Both are required for training here.
        """
        if self.task is None:
            return ()
        names = tuple(self._task_cls().required_data_names(train=train, inference=inference))
        if train and not inference:
            extra = (*self._separated_references(), *self._durations())
            names += tuple(n for n in extra if n not in names)
        return names

    def _durations(self) -> tuple[str, ...]:
        return ("durations",) if (self.args or {}).get("tts") in DURATION_TTS else ()

    def _separated_references(self) -> tuple[str, ...]:
        args = self.args or {}
        for key in ("separator", "enh_separator"):
            if not args.get(key) or (args.get("model_conf") or {}).get("flexible_numspk"):
                continue
            choice = next(c for c in self._task_cls().class_choices_list if c.name == key)
            default = inspect.signature(choice.get_class(args[key])).parameters.get("num_spk")
            num_spk = (args.get(f"{key}_conf") or {}).get("num_spk", getattr(default, "default", 1))
            if isinstance(num_spk, int) and num_spk > 1:
                return tuple(f"speech_ref{n}" for n in range(1, num_spk + 1))
        return ()

    def fingerprint(self) -> str:
        """Changes whenever preprocessing could change an item's shape (options, token lists, models)."""
        options = {k: self.args.get(k) for k in self.keys} if self.args is not None else None
        state = {"task": self.task, "options": options, "target": self.target, "common": self.common}
        text = json.dumps(state, sort_keys=True, default=str)
        stamped = json.dumps([_file_stamp(v) for v in _leaves(state)], default=str)
        return hashlib.sha256((text + stamped).encode()).hexdigest()[:16]


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]
