"""``callbacks:`` and ``loggers:``: the user's Lightning callbacks and loggers, beside espnet3's own.

Each entry is a ``{_target_: pkg.Class, ...}`` block, checked on the driver (the class imports, is
a Lightning ``Callback``/``Logger``, takes the given keywords, and does not take over a job that
espnet3 or Ray does) and built in every Ray Train worker. The ``logging:`` shorthands
(``tensorboard``, ``wandb``) become logger blocks here too.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Where the `logging.tensorboard` logger writes, under exp_dir.
TENSORBOARD_DIR = "tensorboard"

# Callback classes a user may not add, and why: each would break what espnet3 guarantees.
REFUSED_CALLBACKS = {
    "lightning.pytorch.callbacks.ModelCheckpoint": (
        "checkpoints are Ray Train's: one is reported after every validation and `best_model_criterion` "
        "decides which are kept and averaged; set `best_model_criterion` instead"
    ),
    "ray.train.lightning.RayTrainReportCallback": (
        "espnet3 already reports metrics and checkpoints to Ray Train after every validation; remove it"
    ),
    "lightning.pytorch.callbacks.WeightAveraging": (
        "export and evaluation must know which weights are averaged; use the `ema:` block "
        "(e.g. `ema: {decay: 0.999}`)"
    ),
    "lightning.pytorch.callbacks.ProgressBar": (
        "progress bars redraw lines, which Ray's log forwarding turns into noise; espnet3 prints one "
        "progress line on the driver (every `trainer.log_every_n_steps`)"
    ),
}


@dataclass(frozen=True)
class Extension:
    """One checked ``_target_`` block of ``callbacks:`` or ``loggers:``.

    Attributes:
        key: where it came from (``callbacks[0]``), for messages.
        block: the block, passed to Hydra's ``instantiate`` in the workers.
    """

    key: str
    block: dict[str, Any]

    def build(self) -> Any:
        from espnet3.utils.instantiate import instantiate

        return instantiate(self.block)


def parse_callbacks(entries: Sequence[Any] | None) -> tuple[Extension, ...]:
    """Check ``callbacks:`` (see the module docstring); raises ``ValueError``/``TypeError`` naming the entry."""
    from lightning.pytorch.callbacks import Callback

    from espnet3.utils.instantiate import import_dotted

    extensions = _parse("callbacks", entries, Callback, "lightning.pytorch.callbacks.EarlyStopping")
    for extension in extensions:
        cls = import_dotted(extension.block["_target_"])
        for refused, why in REFUSED_CALLBACKS.items():
            if issubclass(cls, import_dotted(refused)):
                raise ValueError(f"`{extension.key}`: {extension.block['_target_']} cannot be added: {why}.")
    return extensions


def parse_loggers(entries: Sequence[Any] | None) -> tuple[Extension, ...]:
    """Check ``loggers:`` (see the module docstring)."""
    from lightning.pytorch.loggers import Logger

    return _parse("loggers", entries, Logger, "lightning.pytorch.loggers.CSVLogger")


def shorthand_loggers(logging: Mapping[str, Any], exp_dir: str, name: str) -> tuple[Extension, ...]:
    """The ``logging:`` block's TensorBoard and W&B loggers, as logger blocks."""
    extensions = []
    if logging.get("tensorboard", True):
        extensions.append(Extension("logging.tensorboard", {
            "_target_": "lightning.pytorch.loggers.TensorBoardLogger",
            "save_dir": exp_dir, "name": TENSORBOARD_DIR, "version": "",
        }))
    if logging.get("wandb"):
        extensions.append(Extension("logging.wandb", {
            "_target_": "lightning.pytorch.loggers.WandbLogger", "save_dir": exp_dir, "name": name,
            **dict(logging["wandb"]),
        }))
    return tuple(extensions)


def _parse(section: str, entries: Sequence[Any] | None, base: type, example: str) -> tuple[Extension, ...]:
    from espnet3.utils.instantiate import import_dotted

    extensions = []
    for i, entry in enumerate(entries or ()):
        key = f"{section}[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("_target_"), str):
            raise ValueError(f"`{key}` must be a {{_target_: pkg.Class, ...}} block, e.g. {{_target_: {example}}}; "
                             f"got {entry!r}")
        target = entry["_target_"]
        try:
            cls = import_dotted(target)
        except (ImportError, ValueError) as exc:
            raise ValueError(f"`{key}._target_: {target}` cannot be imported ({exc}); fix the dotted path "
                             "or install the package that provides it") from None
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"`{key}._target_: {target}` is not a {base.__module__}.{base.__qualname__}; "
                            f"{section} takes Lightning {base.__name__} classes such as {example}")
        kwargs = {k: v for k, v in entry.items() if k != "_target_"}
        try:
            inspect.signature(cls).bind_partial(**kwargs)
        except TypeError as exc:
            raise ValueError(f"`{key}`: {target} does not take these options ({exc})") from None
        extensions.append(Extension(key, dict(entry)))
    return tuple(extensions)
