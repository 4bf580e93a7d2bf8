"""Lightning callbacks that run inside each Ray Train worker."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

CHECKPOINT_NAME = "checkpoint.ckpt"


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}


class RayReportCallback(L.Callback):
    """Report metrics plus a Lightning checkpoint to Ray Train after every validation.

    Unlike Ray's stock ``RayTrainReportCallback`` (train-epoch end only) this follows
    validation, so ``report_every_n_steps`` (Lightning's ``val_check_interval``) gives
    Tune/ASHA mid-epoch decisions and every report carries ``valid/*`` for top-K
    selection. Every rank calls ``save_checkpoint`` (it holds a barrier) and
    ``ray.train.report`` (also a barrier); only rank 0 attaches the files.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        import ray.train

        metrics = _floats(trainer.callback_metrics)
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
        with tempfile.TemporaryDirectory() as tmp:
            trainer.save_checkpoint(os.path.join(tmp, CHECKPOINT_NAME))
            checkpoint = ray.train.Checkpoint.from_directory(tmp) if trainer.global_rank == 0 else None
            ray.train.report(metrics, checkpoint=checkpoint)


class ConsoleProgress(L.Callback):
    """One line every ``every`` steps on rank 0: loss and throughput, readable in Ray's driver log.

    Lightning's tqdm bar redraws with carriage returns, which Ray's log forwarding
    turns into a wall of partial lines.
    """

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self._utterances = 0
        self._since = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(batch, (tuple, list)):
            self._utterances += len(batch[0])
        if trainer.global_rank != 0 or (batch_idx + 1) % self.every:
            return
        now = time.perf_counter()
        rate = self._utterances * trainer.world_size / max(now - self._since, 1e-9)
        loss = trainer.callback_metrics.get("train/loss")
        loss_text = f"{float(loss):.4f}" if loss is not None else "n/a"
        print(
            f"[espnet3] epoch {trainer.current_epoch} step {trainer.global_step} "
            f"train/loss {loss_text} {rate:.1f} utt/s",
            flush=True,
        )
        self._utterances, self._since = 0, now

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        valid = {k: v for k, v in _floats(trainer.callback_metrics).items() if k.startswith("valid/")}
        shown = " ".join(f"{k} {v:.4f}" for k, v in sorted(valid.items()))
        print(f"[espnet3] epoch {trainer.current_epoch} step {trainer.global_step} {shown}", flush=True)


class FaultInjection(L.Callback):
    """Test hook: kill one rank abruptly once, at a chosen global step.

    Armed only through the ``ESPNET3_FAULT_INJECTION=rank:step:marker`` environment
    variable of the launching process; the marker file makes it fire once across
    Ray Train's worker-group restarts.
    """

    def __init__(self, rank: int, step: int, marker: Path) -> None:
        self.rank, self.step, self.marker = rank, step, Path(marker)

    @classmethod
    def parse(cls, value: str) -> FaultInjection:
        rank, step, marker = value.split(":", 2)
        return cls(int(rank), int(step), Path(marker))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(f"killed rank {self.rank} at step {self.step}\n")
            os._exit(1)
