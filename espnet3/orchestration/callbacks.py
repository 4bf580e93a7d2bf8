"""Lightning callbacks that run inside each Ray Train worker."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch

from espnet3.orchestration.console import progress_line, validation_line
from espnet3.orchestration.counters import IterationCounts
from espnet3.orchestration.criteria import METRICS_FILE, BestCriterion

CHECKPOINT_NAME = "checkpoint.ckpt"
# Beside a checkpoint: the training sampler's progress through its epoch (resumed exactly).
SAMPLER_FILE = "sampler.json"


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}


# A checkpoint's local copy, before Ray uploads (and deletes) it: named after the writing process.
LOCAL_CHECKPOINT_PREFIX = "espnet3-checkpoint-"


def remove_orphaned_checkpoints(tmp_dir: str | None = None) -> list[str]:
    """Remove the local checkpoint copies of processes that no longer run; returns what was removed.

    Ray deletes a reported copy once its background upload is done, so a worker killed before that
    (a lost peer, a SIGKILL, a restart) leaves one behind in the temporary directory, a whole model
    each time (the suite left 49 of them on this machine in four runs). The next worker on the node
    removes them; live processes' copies may still be uploading and are left alone.
    """
    removed = []
    for path in Path(tmp_dir or tempfile.gettempdir()).glob(f"{LOCAL_CHECKPOINT_PREFIX}*-*"):
        pid = path.name[len(LOCAL_CHECKPOINT_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _running(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RayReportCallback(L.Callback):
    """Report metrics plus a Lightning checkpoint to Ray Train after every validation.

    Unlike Ray's stock ``RayTrainReportCallback`` (train-epoch end only) this follows
    validation, so ``report_every_n_steps`` (Lightning's ``val_check_interval``) gives
    Tune/ASHA mid-epoch decisions and every report carries ``valid/*`` for top-K
    selection. Every rank calls ``save_checkpoint`` (it holds a barrier) and
    ``ray.train.report`` (also a barrier); only rank 0 attaches the files, with the
    metrics beside them (``metrics.json``, which :mod:`espnet3.orchestration.pruning` ranks).
    Each report also carries ESPnet2's ``train/total_count`` and ``valid/total_count`` (``counts``).
    The driver checks every ``best_model_criterion`` metric before Ray starts; one still missing
    from the first report fails the run there, not after the last epoch.

    Every checkpoint carries the training sampler's progress (``sampler.json``), so a run resumed
    from a mid-epoch one trains exactly the epoch's remaining batches. When the ranks have agreed
    on a preemption notice (``nan_guard.stop_agreed``), the next optimizer-step boundary saves and
    reports a checkpoint (``preemption`` in its metrics, which keeps it out of every top-K) and
    stops with :class:`~espnet3.orchestration.preemption.PreemptionStop`. When that step is one a
    validation follows (an epoch's last, or every ``report_every_n_steps``), its checkpoint records
    the validation as still to run (:func:`validation_pending`), so the resumed run validates and
    reports before it trains on: Lightning would skip that validation, and Tune/ASHA would miss
    the report.
    """

    def __init__(self, criteria: Sequence[BestCriterion] = (), send: Callable[[str], None] | None = None,
                 notice=None, counts: IterationCounts | None = None) -> None:
        self.criteria = tuple(criteria)
        self.send = send
        self.notice = notice
        self.counts = counts
        self._validation_due = False
        remove_orphaned_checkpoints()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = _floats(trainer.callback_metrics)
        if self.counts is not None:
            metrics.update(self.counts.metrics())
        self._check_criteria(metrics)
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
        self._report(trainer, metrics, trainer.fit_loop.epoch_loop.batch_progress.current.completed)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        guard = getattr(pl_module, "nan_guard", None)
        if guard is None or not guard.stop_agreed or trainer.fit_loop.epoch_loop._should_accumulate():
            return
        from espnet3.orchestration.preemption import PREEMPTION_KEY, PreemptionStop, StopRequested

        record = self.notice.describe() if self.notice is not None else {"reason": "preemption notice"}
        record.update(time=time.time(), world_size=trainer.world_size, checkpoint_step=trainer.global_step,
                      epoch=trainer.current_epoch)
        # Ray ranks checkpoints by the first criterion and keeps its metrics in JSON (a NaN comes
        # back as null and breaks the ranking on --resume): the worst finite value instead; espnet3's
        # own ranking skips checkpoints written for a notice.
        metrics = {c.metric: sys.float_info.max if c.mode == "min" else -sys.float_info.max for c in self.criteria}
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step, **{PREEMPTION_KEY: record})
        epoch_loop = trainer.fit_loop.epoch_loop
        self._validation_due = epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)
        try:
            self._report(trainer, metrics, batch_idx + 1, wait=True)
        finally:
            self._validation_due = False
        requested = self.notice is not None and self.notice.requested is not None
        if trainer.global_rank == 0 and self.send is not None and not requested:
            deadline = record.get("deadline")
            left = f", {deadline - time.time():.0f} s before the deadline" if deadline else ""
            ranks = f" of rank(s) {record['ranks']}" if record.get("ranks") else ""
            self.send(f"[espnet3] preemption notice ({record['reason']}{ranks}): checkpoint at step "
                      f"{trainer.global_step}{left}; Ray restarts the workers without the draining node")
        if requested:
            raise StopRequested(f"checkpoint saved at step {trainer.global_step}: {record['reason']}")
        raise PreemptionStop(f"checkpoint saved at step {trainer.global_step} for a preemption notice")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._validation_due:
            validation_pending(checkpoint["loops"]["fit_loop"])

    def _report(self, trainer: L.Trainer, metrics: dict, batches_done: int, wait: bool = False) -> None:
        """Save a checkpoint on every rank and report it (rank 0 attaches the files).

        Ray uploads it in the background (``CheckpointUploadMode.ASYNC``) while training goes on:
        with ``exp_dir`` in a bucket a synchronous upload held every rank at the report's barrier
        for as long as the PUTs took. Ray keeps the reports in order and flushes the uploads when
        the training function returns. ``wait``: upload before returning, for a checkpoint the
        group stops after (a notice's): a failing training function flushes nothing.
        """
        import ray.train
        from ray.train import CheckpointUploadMode

        sampler = getattr(trainer.train_dataloader, "batch_sampler", None)
        progress = sampler.progress(batches_done) if hasattr(sampler, "progress") else None
        # Ray deletes a reported directory once it is uploaded; the other ranks' is removed here.
        tmp = tempfile.mkdtemp(prefix=f"{LOCAL_CHECKPOINT_PREFIX}{os.getpid()}-")
        checkpoint = None
        try:
            trainer.save_checkpoint(os.path.join(tmp, CHECKPOINT_NAME))
            if trainer.global_rank == 0:
                Path(tmp, METRICS_FILE).write_text(json.dumps(metrics, indent=1))
                if progress is not None:
                    Path(tmp, SAMPLER_FILE).write_text(json.dumps(progress))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, delete_local_checkpoint_after_upload=True,
                             checkpoint_upload_mode=CheckpointUploadMode.SYNC if wait else CheckpointUploadMode.ASYNC)
        finally:
            if checkpoint is None:
                shutil.rmtree(tmp, ignore_errors=True)

    def _check_criteria(self, metrics: dict[str, float]) -> None:
        # Validation metrics are synced, so every rank sees the same keys and raises together.
        missing = [c.metric for c in self.criteria if c.metric not in metrics]
        if missing:
            raise ValueError(
                f"`best_model_criterion` ranks by {', '.join(missing)}, which the model does not log; "
                f"logged: {', '.join(sorted(metrics))}. Fix `best_model_criterion` in the train.yaml."
            )


def validation_pending(fit_loop: dict) -> None:
    """Rewrite a checkpoint's fit-loop state, saved at the end of a training step a validation
    follows, into the state of one saved as that validation starts.

    Lightning resumes a checkpoint saved at a step's end (``on_train_batch_end``) with the next step
    and skips the validation due after the saved one: resumed at an epoch's last step, the epoch
    ends unvalidated and unreported. A checkpoint saved as a validation starts (the step completed,
    one validation batch begun and none processed) is resumed by Lightning's own
    "restarted mid-evaluation" path, which runs the whole validation before the next step.
    """
    train = fit_loop["epoch_loop.batch_progress"]
    for counters in (train["total"], train["current"]):
        counters["completed"] = counters["processed"]
    valid = fit_loop["epoch_loop.val_loop.batch_progress"]
    total = valid["total"]
    total["processed"] = total["completed"]
    total["ready"] = total["started"] = total["completed"] + 1
    valid["current"] = {"ready": 1, "started": 1, "processed": 0, "completed": 0}
    valid["is_last_batch"] = False


class ResumePosition(L.Callback):
    """Moves Lightning's restored place in a resumed epoch to where the training sampler resumes it.

    Lightning restores "batches done in this epoch" from the checkpoint and stops the epoch when
    that count reaches the loader's length, which it reads once. A group of another size re-deals
    the epoch's rest (:meth:`DistributedBatchSampler.resume`), so the old count means nothing:
    after 6 of 8 batches with one worker, two workers have 1 of 4 left, and Lightning, restored at
    6 >= 4, would end the epoch before it. The checkpoint's counters are shifted (all by the same
    amount, so Lightning still sees where in a step it was saved) to the sampler's position.
    """

    def __init__(self, batch_sampler) -> None:
        self.batch_sampler = batch_sampler

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        position = getattr(self.batch_sampler, "resumed_batches_done", lambda: None)()
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
        if position is None or not progress:
            return
        current = progress["current"]
        # Saved at a step's end (on_train_batch_end) `completed` lags by the batch in flight.
        shift = position - current["processed"]
        for counters in (progress["current"], progress["total"]):
            for key in ("ready", "started", "processed", "completed"):
                counters[key] = max(0, counters[key] + shift)


class ConsoleProgress(L.Callback):
    """Rank 0's progress and validation lines (:mod:`espnet3.orchestration.console`), sent to ``send``.

    One line every ``every`` training batches: epoch x/y, step x/y (training batches, resumed
    runs included), the training losses, utterances per second over all workers, the time left
    at the rate of this run so far (validation included) and ``data_wait``. Lightning's tqdm bar
    redraws with carriage returns, which Ray's log forwarding turns into a wall of partial lines.

    ``data_wait`` is the share of step time, over the line's batches, that the training loop
    spent waiting for the next batch: from the end of one batch (this callback's
    ``on_train_batch_end``, the start of the epoch or the end of a validation) to
    ``on_train_batch_start`` of the next. That covers the DataLoader's ``next()`` and the batch's
    move to the device, and also the little Lightning does after a batch (the batch-end hooks of
    callbacks listed after this one, writing the step's logs). Step time is that wait plus the
    time to the batch's end; validation and epoch ends count as neither. Measured with
    ``time.perf_counter`` on each rank, without any synchronisation or collective: the line and
    the ``train/data_wait`` scalar, written to the Trainer's loggers when the line is printed, are
    rank 0's own wait (another rank starved for data shows on rank 0 as longer steps, in the
    gradient all-reduce, not as data wait).
    """

    METRIC = "train/data_wait"
    AUDIO_METRICS = ("train/audio_s_per_s", "train/rtf")

    def __init__(self, every: int, send: Callable[[str], None], sample_rate: int | None = None,
                 exp_dir: str | None = None) -> None:
        self.every = max(1, every)
        self.send = send
        self.exp_dir = exp_dir  # where the line's numbers are also kept (exp_dir/status/progress.json)
        self._status = None  # rank 0's ProgressWriter
        # Speech units: the batches' `speech_lengths` (samples) at `sample_rate`, summed on the
        # batch's device and read once per line (no host sync per step).
        self.sample_rate = sample_rate
        self._samples = None
        self._utterances = 0
        self._since = time.perf_counter()
        self._start: tuple[float, int] = (self._since, 0)
        self._total: int | None = None
        # data wait: when the loop was last free to fetch a batch, when this batch started,
        # and the line's wait and step time so far
        self._mark: float | None = None
        self._batch_start: float | None = None
        self._waited = 0.0
        self._elapsed = 0.0

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
        self._waited = self._elapsed = 0.0
        self._mark = time.perf_counter()  # a run resumed mid-epoch starts no epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = now = time.perf_counter()
        if self._mark is not None:
            self._waited += now - self._mark
            self._elapsed += now - self._mark

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._batch_start is not None:
            self._elapsed += now - self._batch_start
        self._batch_start = None
        if isinstance(batch, (tuple, list)):
            self._utterances += len(batch[0])
            lengths = batch[1].get("speech_lengths") if len(batch) > 1 and isinstance(batch[1], dict) else None
            if self.sample_rate and isinstance(lengths, torch.Tensor):
                total = lengths.detach().sum()
                self._samples = total if self._samples is None else self._samples + total
        done = self._done(trainer)
        if done % self.every:
            self._mark = time.perf_counter()
            return
        if trainer.global_rank != 0:
            self._utterances, self._waited, self._elapsed, self._samples = 0, 0.0, 0.0, None
            self._mark = time.perf_counter()
            return
        rate = self._utterances * trainer.world_size / max(now - self._since, 1e-9)
        audio = None  # rank 0's audio times the ranks, as utt/s counts rank 0's utterances
        if self._samples is not None:
            audio = float(self._samples) / self.sample_rate * trainer.world_size / max(now - self._since, 1e-9)
        started, done_before = self._start
        eta = None
        if self._total is not None and done > done_before:
            eta = (now - started) / (done - done_before) * (self._total - done)
        losses = {
            k.removeprefix("train/"): v
            for k, v in _floats(trainer.callback_metrics).items()
            if k.startswith("train/") and k.endswith("loss")
        }
        data_wait = self._waited / self._elapsed if self._elapsed > 0 else None
        epoch, max_epochs = trainer.current_epoch + 1, self._max_epochs(trainer)
        self.send(progress_line(epoch, max_epochs, done, self._total, losses, rate, eta, data_wait, audio))
        if self.exp_dir is not None:
            if self._status is None:
                from espnet3.orchestration.status import ProgressWriter

                self._status = ProgressWriter(self.exp_dir)
            self._status.put({"epoch": epoch, "max_epochs": max_epochs, "step": done, "total_steps": self._total,
                              "losses": losses, "utt_per_s": rate, "audio_s_per_s": audio, "eta_s": eta,
                              "data_wait": data_wait, "world_size": trainer.world_size})
        scalars = {} if data_wait is None else {self.METRIC: data_wait}
        if audio:
            scalars.update(zip(self.AUDIO_METRICS, (audio, 1 / audio)))
        if scalars:
            self._log(trainer, scalars)
        self._utterances, self._since, self._samples = 0, now, None
        self._waited = self._elapsed = 0.0
        self._mark = time.perf_counter()  # the line and the scalar are not waiting for data

    def _log(self, trainer: L.Trainer, scalars: dict[str, float]) -> None:
        # Written where Lightning writes the module's train/* scalars for this batch (and where
        # LearningRateMonitor writes the learning rates): at the count of batches that stepped,
        # which ``global_step`` trails once the NaN guard skips an optimizer step.
        step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._status is not None:  # the last line's record reaches the file before the worker ends
            self._status.close()
            self._status = None

    def on_validation_end(self, trainer, pl_module) -> None:
        self._mark = time.perf_counter()  # validation is neither data wait nor step time
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        valid = {k: v for k, v in _floats(trainer.callback_metrics).items() if k.startswith("valid/")}
        epoch, max_epochs = trainer.current_epoch + 1, self._max_epochs(trainer)
        self.send(validation_line(epoch, max_epochs, self._done(trainer), valid))
