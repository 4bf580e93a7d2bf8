"""Lightning callbacks that run inside each Ray Train worker."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch

from espnet3.orchestration.console import progress_line, validation_line
from espnet3.orchestration.criteria import METRICS_FILE, BestCriterion

CHECKPOINT_NAME = "checkpoint.ckpt"


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}


class RayReportCallback(L.Callback):
    """Report metrics plus a Lightning checkpoint to Ray Train after every validation.

    Unlike Ray's stock ``RayTrainReportCallback`` (train-epoch end only) this follows
    validation, so ``report_every_n_steps`` (Lightning's ``val_check_interval``) gives
    Tune/ASHA mid-epoch decisions and every report carries ``valid/*`` for top-K
    selection. Every rank calls ``save_checkpoint`` (it holds a barrier) and
    ``ray.train.report`` (also a barrier); only rank 0 attaches the files, with the
    metrics beside them (``metrics.json``, which :mod:`espnet3.orchestration.pruning` ranks).
    A ``best_model_criterion`` metric missing from the first report fails the run there,
    not after the last epoch.
    """

    def __init__(self, criteria: Sequence[BestCriterion] = ()) -> None:
        self.criteria = tuple(criteria)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        import ray.train

        metrics = _floats(trainer.callback_metrics)
        self._check_criteria(metrics)
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
        with tempfile.TemporaryDirectory() as tmp:
            trainer.save_checkpoint(os.path.join(tmp, CHECKPOINT_NAME))
            checkpoint = None
            if trainer.global_rank == 0:
                Path(tmp, METRICS_FILE).write_text(json.dumps(metrics, indent=1))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)

    def _check_criteria(self, metrics: dict[str, float]) -> None:
        # Validation metrics are synced, so every rank sees the same keys and raises together.
        missing = [c.metric for c in self.criteria if c.metric not in metrics]
        if missing:
            raise ValueError(
                f"`best_model_criterion` ranks by {', '.join(missing)}, which the model does not log; "
                f"logged: {', '.join(sorted(metrics))}. Fix `best_model_criterion` in the train.yaml."
            )


class ConsoleProgress(L.Callback):
    """Rank 0's progress and validation lines (:mod:`espnet3.orchestration.console`), sent to ``send``.

    One line every ``every`` training batches: epoch x/y, step x/y (training batches, resumed
    runs included), the training losses, utterances per second over all workers and the time
    left at the rate of this run so far (validation included). Lightning's tqdm bar redraws with
    carriage returns, which Ray's log forwarding turns into a wall of partial lines.
    """

    def __init__(self, every: int, send: Callable[[str], None]) -> None:
        self.every = max(1, every)
        self.send = send
        self._utterances = 0
        self._since = time.perf_counter()
        self._start: tuple[float, int] = (self._since, 0)
        self._total: int | None = None

    @staticmethod
    def _done(trainer: L.Trainer) -> int:
        return trainer.fit_loop.epoch_loop.total_batch_idx + 1

    @staticmethod
    def _max_epochs(trainer: L.Trainer) -> int | None:
        return trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = (time.perf_counter(), self._done(trainer))
        self._since = self._start[0]
        total = trainer.estimated_stepping_batches * trainer.accumulate_grad_batches
        self._total = int(total) if math.isfinite(total) else None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(batch, (tuple, list)):
            self._utterances += len(batch[0])
        done = self._done(trainer)
        if trainer.global_rank != 0 or done % self.every:
            return
        now = time.perf_counter()
        rate = self._utterances * trainer.world_size / max(now - self._since, 1e-9)
        started, done_before = self._start
        eta = None
        if self._total is not None and done > done_before:
            eta = (now - started) / (done - done_before) * (self._total - done)
        losses = {
            k.removeprefix("train/"): v
            for k, v in _floats(trainer.callback_metrics).items()
            if k.startswith("train/") and k.endswith("loss")
        }
        epoch, max_epochs = trainer.current_epoch + 1, self._max_epochs(trainer)
        self.send(progress_line(epoch, max_epochs, done, self._total, losses, rate, eta))
        self._utterances, self._since = 0, now

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        valid = {k: v for k, v in _floats(trainer.callback_metrics).items() if k.startswith("valid/")}
        epoch, max_epochs = trainer.current_epoch + 1, self._max_epochs(trainer)
        self.send(validation_line(epoch, max_epochs, self._done(trainer), valid))
