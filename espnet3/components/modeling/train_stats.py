"""Training stats between Lightning's log steps: every step's values reach the loggers, weighted.

The module logs ``train/*`` only on the steps Lightning writes to its loggers (logging every
step made it 1.4x a bare LightningModule on a few-ms model). A value logged on any other step
never reaches a logger: with several optimizers, a loss whose turn never falls on a log step
(a generator updated on batches 0, 2, 4 while the loggers write on 1, 3, 5) was lost. So each
step's stats are added here, on the device (no host sync), weighted by the step's ``weight``;
a log step logs, per key, the weighted mean of every step since the last log step that reported
that key, as ESPnet2's reporter averages between its log intervals. An epoch's last batch is
logged too (epoch-end callbacks read it) without starting over, because Lightning writes it to
the loggers only when it is also a log step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


class TrainStats:
    """Weighted sums of the training stats since the last flush, one per key."""

    def __init__(self) -> None:
        # One running (sums, weight) pair per set of keys a step reports, so that a step costs a
        # stack, a multiply and two adds however many stats the model returns.
        self._groups: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, stats: Mapping[str, torch.Tensor | float], weight: torch.Tensor | float) -> None:
        if not stats:
            return
        keys = tuple(stats)
        device = next((v.device for v in stats.values() if isinstance(v, torch.Tensor)), None)
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device).reshape(())
                              for v in stats.values()])
        weight = torch.as_tensor(weight, dtype=torch.float32, device=values.device).reshape(())
        previous = self._groups.get(keys)
        if previous is None:
            self._groups[keys] = (values * weight, weight)
        else:
            self._groups[keys] = (previous[0] + values * weight, previous[1] + weight)

    def means(self, reset: bool = True) -> dict[str, torch.Tensor]:
        """Every key's weighted mean since the last reset (still on the device); ``reset``: start
        over (after a step whose values the loggers write)."""
        sums: dict[str, torch.Tensor] = {}
        weights: dict[str, torch.Tensor] = {}
        for keys, (values, weight) in self._groups.items():
            for key, value in zip(keys, values):
                sums[key] = sums[key] + value if key in sums else value
                weights[key] = weights[key] + weight if key in weights else weight
        if reset:
            self._groups.clear()
        return {key: sums[key] / weights[key] for key in sums}
