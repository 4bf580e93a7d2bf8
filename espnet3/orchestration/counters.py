"""ESPnet2's trainer-level counters, reported with every checkpoint so criteria can rank by them.

ESPnet2's ``Reporter`` adds ``total_count`` to each phase's stats: the iterations of that phase
(``train`` or ``valid``) in all epochs so far. Every ESPnet2 GAN TTS and codec recipe keeps
checkpoints by ``best_model_criterion: [[train, total_count, max]]``, i.e. the latest ones, so a
converted recipe needs ``train/total_count`` in the reported metrics. The counts are kept in the
checkpoint (Lightning saves a callback's ``state_dict``), so a resumed or resized run goes on
counting where it stopped and "max" stays "latest".
"""

from __future__ import annotations

from typing import Any

import lightning as L

# The counter criteria may rank by, per phase (``train/total_count``, ``valid/total_count``).
COUNTER = "total_count"
PHASES = ("train", "valid")


def counter_metrics() -> tuple[str, ...]:
    """Every counter metric a run reports: ``train/total_count``, ``valid/total_count``."""
    return tuple(f"{phase}/{COUNTER}" for phase in PHASES)


class IterationCounts(L.Callback):
    """Counts this rank's training and validation iterations (sanity checks excluded), as ESPnet2's
    ``total_count``, and carries them through checkpoints."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(PHASES, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.counts["train"] += 1

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.counts["valid"] += 1

    def metrics(self) -> dict[str, float]:
        return {f"{phase}/{COUNTER}": float(count) for phase, count in self.counts.items()}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.counts)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.counts.update({phase: int(state_dict.get(phase, 0)) for phase in PHASES})
