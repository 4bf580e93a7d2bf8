"""``ema:``: an exponential moving average of the weights, kept beside the trained ones.

Built on Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging`, so the average is
checkpointed and restored with the run, in Lightning's layout: a checkpoint's ``state_dict`` holds
the EMA weights, ``current_model_state`` the trained ones (what training resumes from) and
``averaging_state`` the average's counters. ``use_for`` says which of the two a run validates,
ranks by ``best_model_criterion``, averages and exports (see :data:`EMA_USES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightning.pytorch.callbacks import EMAWeightAveraging

# export: validation, best_model_criterion, the averaged models and last.pth use the EMA weights
#   (Lightning's own EMA behaviour).
# none: they use the trained weights; the EMA is only tracked, and written to ema.pth at the end.
EMA_USES = ("export", "none")
EMA_MODEL_FILE = "ema.pth"


@dataclass(frozen=True)
class EMASpec:
    """The parsed ``ema:`` block.

    Attributes:
        decay: weight of the old average at each update (0.999 ~ the last 1,000 updates).
        start_step: first optimizer step (0-based) that averages; before it the average is a
            copy of the weights (so validating it early measures the model, not its initialisation).
        every_n_steps: update after every n-th optimizer step.
        use_for: ``export`` or ``none`` (:data:`EMA_USES`).
    """

    decay: float = 0.999
    start_step: int = 0
    every_n_steps: int = 1
    use_for: str = "export"

    def __post_init__(self) -> None:
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or not 0 < self.decay < 1:
            raise ValueError(f"`ema.decay` must be a number between 0 and 1 (e.g. 0.999), got {self.decay!r}")
        for key in ("start_step", "every_n_steps"):
            value = getattr(self, key)
            lowest = 1 if key == "every_n_steps" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"`ema.{key}` must be an integer >= {lowest}, got {value!r}")
        if self.use_for not in EMA_USES:
            raise ValueError(f"`ema.use_for` must be one of {', '.join(EMA_USES)}, got {self.use_for!r}")

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> EMASpec | None:
        if block is None:
            return None
        if not isinstance(block, Mapping):
            raise ValueError(f"`ema` must be a block such as {{decay: 0.999}} or null, got {block!r}")
        unknown = sorted(set(block) - {"decay", "start_step", "every_n_steps", "use_for"})
        if unknown:
            raise ValueError(
                f"`ema.{unknown[0]}` is not an EMA option; valid: decay, start_step, every_n_steps, use_for"
            )
        return cls(**dict(block))

    @property
    def exported(self) -> bool:
        """Whether the run's validation, averages and exports are the EMA weights."""
        return self.use_for == "export"

    def callback(self) -> EMA:
        return EMA(self)


class EMA(EMAWeightAveraging):
    """Lightning's EMA callback, configured by :class:`EMASpec`.

    With ``use_for: none`` validation keeps the trained weights (no swap) and training does not
    end by copying the average over them; the checkpoint layout is Lightning's either way.
    """

    def __init__(self, spec: EMASpec) -> None:
        super().__init__(decay=spec.decay, update_every_n_steps=spec.every_n_steps)
        self.spec = spec

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        # Lightning leaves the average at the initial weights until `update_starting_at_step`;
        # here it copies the weights until `start_step` instead: an update with n_averaged == 0
        # is a copy in torch's AveragedModel.
        if step_idx is not None and step_idx < self.spec.start_step:
            self._average_model.n_averaged.zero_()
            return True
        return super().should_update(step_idx=step_idx, epoch_idx=epoch_idx)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self.spec.exported:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.spec.exported:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.spec.exported:
            super().on_train_end(trainer, pl_module)
