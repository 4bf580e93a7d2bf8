"""The training side of a train.yaml, parsed once on the driver and handed to every Ray Train worker.

``best_model_criterion``, ``callbacks``, ``loggers`` (and the ``logging:`` shorthands), ``ema``
and the ``trainer:`` block (with ``trainer.strategy``) become typed values here, checked before
Ray starts; workers build Lightning objects from them and never re-read the YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from espnet3.components.ema import EMASpec
from espnet3.orchestration.criteria import BestCriterion, parse_criteria
from espnet3.orchestration.extensions import Extension, parse_callbacks, parse_loggers, shorthand_loggers
from espnet3.orchestration.strategy import StrategySpec

# Trainer options espnet3 sets itself, and where a train.yaml says what it wants instead.
RESERVED_TRAINER_KEYS = {
    "devices": "espnet3 sets it from --num-gpus / --num-workers",
    "num_nodes": "Ray Train places the workers; give their number with --num-gpus / --num-workers",
    "accelerator": "espnet3 sets it from --num-gpus (0: CPU workers)",
    "plugins": "espnet3 sets Ray's cluster environment",
    "callbacks": "list Lightning callbacks in the top-level `callbacks:`",
    "logger": "list Lightning loggers in the top-level `loggers:` (or use `logging:`)",
    "enable_checkpointing": "checkpoints are Ray Train's; `best_model_criterion` decides which are kept",
    "enable_progress_bar": "espnet3 prints one progress line on the driver (every `trainer.log_every_n_steps`)",
    "enable_model_summary": "rank 0 writes the model summary to exp_dir/logs/rank0.log",
    "use_distributed_sampler": "espnet3's batch sampler shards the data across workers",
    "default_root_dir": "set `exp_dir`",
}


@dataclass(frozen=True)
class TrainSpec:
    """What the workers build their ``lightning.Trainer`` from.

    Attributes:
        criteria: ``best_model_criterion``; the first one is the default model for export and evaluation.
        callbacks: the user's Lightning callbacks.
        loggers: the ``logging:`` shorthands' loggers, then the user's ``loggers:``.
        ema: the ``ema:`` block, or ``None``.
        strategy: ``trainer.strategy``.
        trainer: the other ``trainer:`` options (Lightning ``Trainer`` keywords), with
            ``report_every_n_steps`` turned into Lightning's validation interval.
        log_every_n_steps: how often the progress line is printed.
    """

    criteria: tuple[BestCriterion, ...]
    callbacks: tuple[Extension, ...] = ()
    loggers: tuple[Extension, ...] = ()
    ema: EMASpec | None = None
    strategy: StrategySpec = field(default_factory=StrategySpec)
    trainer: dict[str, Any] = field(default_factory=dict)
    log_every_n_steps: int = 50

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrainSpec:
        """Parse a resolved train.yaml (plain containers).

        Raises:
            ValueError, TypeError: naming the key and the fix.
        """
        trainer = dict(cfg.get("trainer") or {})
        for key, instead in RESERVED_TRAINER_KEYS.items():
            if key in trainer:
                raise ValueError(f"`trainer.{key}` is set by espnet3: {instead}; remove it from `trainer:`.")
        strategy = StrategySpec.from_config(trainer.pop("strategy", None))
        ema = EMASpec.from_config(cfg.get("ema"))
        strategy.check(
            multi_optimizer=cfg.get("optimizers") is not None,
            ema=ema is not None,
            # Lightning clips by norm unless told `value`.
            gradient_clip_norm=trainer.get("gradient_clip_val") is not None
            and trainer.get("gradient_clip_algorithm") in (None, "norm"),
        )
        every = cfg.get("report_every_n_steps")
        if every:
            trainer.update(val_check_interval=int(every), check_val_every_n_epoch=None)
        loggers = shorthand_loggers(cfg.get("logging") or {}, str(cfg["exp_dir"]), str(cfg["name"]))
        return cls(
            criteria=parse_criteria(cfg["best_model_criterion"]),
            callbacks=parse_callbacks(cfg.get("callbacks")),
            loggers=loggers + parse_loggers(cfg.get("loggers")),
            ema=ema,
            strategy=strategy,
            trainer=trainer,
            log_every_n_steps=int(trainer.get("log_every_n_steps", 50)),
        )

    @property
    def default_criterion(self) -> BestCriterion:
        return self.criteria[0]
