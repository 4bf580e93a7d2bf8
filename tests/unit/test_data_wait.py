"""``data_wait``: the share of step time the training loop spends waiting for the next batch,
on the progress line and as the ``train/data_wait`` scalar (ConsoleProgress, real Lightning runs on CPU)."""

from __future__ import annotations

import re
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

from espnet3.orchestration.callbacks import ConsoleProgress
from espnet3.orchestration.console import progress_line

BATCHES, EVERY = 6, 3
WAIT = re.compile(r" data_wait (\d+)%$")


class SlowItems(Dataset):
    """``(x, y)`` pairs; each ``__getitem__`` sleeps ``delay`` seconds (a slow disk)."""

    def __init__(self, n: int, delay: float) -> None:
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if self.delay:
            time.sleep(self.delay)
        return torch.full((2,), float(i)), torch.zeros(1)


class Toy(L.LightningModule):
    """A linear model whose training (and validation) step sleeps a while (a slow model)."""

    def __init__(self, step_delay: float = 0.0, valid_delay: float = 0.0) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.step_delay, self.valid_delay = step_delay, valid_delay

    def training_step(self, batch, batch_idx):
        if self.step_delay:
            time.sleep(self.step_delay)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        if self.valid_delay:
            time.sleep(self.valid_delay)
        x, y = batch
        self.log("valid/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Recording(Logger):
    """A logger that keeps every ``log_metrics`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[dict, int]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.calls.append((dict(metrics), step))


def fit(*, item_delay=0.0, step_delay=0.0, valid_delay=0.0, logger=False, valid=False, **trainer_kwargs):
    """Train on BATCHES batches of 2 with ConsoleProgress(EVERY); returns its lines."""
    lines: list[str] = []
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=logger, callbacks=[ConsoleProgress(EVERY, lines.append)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=EVERY, num_sanity_val_steps=0, **trainer_kwargs,
    )
    loader = DataLoader(SlowItems(2 * BATCHES, item_delay), batch_size=2, num_workers=0)
    valid_loader = DataLoader(SlowItems(4, 0.0), batch_size=2, num_workers=0) if valid else None
    trainer.fit(Toy(step_delay, valid_delay), loader, valid_loader)
    return [line for line in lines if " valid " not in line]


def shares(lines: list[str]) -> list[float]:
    found = [WAIT.search(line) for line in lines]
    assert all(found), lines
    return [int(m.group(1)) / 100 for m in found]


def test_the_line_shows_data_wait_after_the_eta():
    line = progress_line(2, 10, 40, 400, {"loss": 12.34567}, 85.24, 310.2, 0.0412)
    assert line == "[espnet3] epoch 2/10 step 40/400 loss 12.3457 85.2 utt/s ETA 0:05:10 data_wait 4%"
    assert " utt/s ETA " in line  # what the end-to-end console test (and anyone's grep) looks for
    assert "data_wait" not in progress_line(2, 10, 40, 400, {"loss": 1.0}, 85.24, 310.2)


def test_the_line_shows_audio_seconds_per_second_and_the_real_time_factor():
    line = progress_line(2, 10, 40, 400, {"loss": 1.0}, 85.24, 310.2, 0.0412, audio_s_per_s=250.0)
    assert line.endswith(" 85.2 utt/s ETA 0:05:10 data_wait 4% 250.0 audio-s/s (RTF 0.0040)")


class SpeechToy(Toy):
    """Trains on nothing of an ESPnet-style ``(ids, {"speech_lengths": ...})`` batch but its time."""

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_delay)
        loss = self.layer(torch.ones(1, 2)).sum()
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss


def test_speech_units_come_from_the_batches_speech_lengths_with_no_host_sync_per_step():
    """Two ranks' worth (world size 1 here) of 16 kHz audio: 2 utterances of 0.5 s and 1 s a batch."""
    logger = Recording()
    lines: list[str] = []
    batch = (["a", "b"], {"speech_lengths": torch.tensor([8000, 16000])})
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=EVERY,
                        callbacks=[ConsoleProgress(EVERY, lines.append, sample_rate=16000)])
    trainer.fit(SpeechToy(0.01), DataLoader([batch] * BATCHES, batch_size=None))
    audio = [float(re.search(r" ([\d.]+) audio-s/s", line).group(1)) for line in lines]
    utts = [float(re.search(r" ([\d.]+) utt/s", line).group(1)) for line in lines]
    assert len(audio) == BATCHES // EVERY
    for a, u in zip(audio, utts):
        assert a == pytest.approx(0.75 * u, rel=0.01), "1.5 s of audio per 2 utterances"
    logged = [metrics for metrics, _ in logger.calls if "train/audio_s_per_s" in metrics]
    assert len(logged) == len(lines) and all(m["train/rtf"] == pytest.approx(1 / m["train/audio_s_per_s"]) for m in logged)


def test_a_slow_dataset_shows_as_a_high_data_wait():
    lines = fit(item_delay=0.02)  # 40 ms to load a batch, a step of well under a millisecond
    assert len(lines) == BATCHES // EVERY
    assert all(" data_wait " in line for line in lines)
    assert all(share > 0.5 for share in shares(lines)), lines


def test_a_slow_step_shows_as_a_low_data_wait():
    lines = fit(step_delay=0.03)  # batches at once, a 30 ms step
    assert len(lines) == BATCHES // EVERY
    assert all(share < 0.3 for share in shares(lines)), lines


def test_validation_counts_as_neither_wait_nor_step():
    # a validation after every second batch that takes longer than the training around it
    lines = fit(step_delay=0.02, valid_delay=0.05, valid=True, val_check_interval=2)
    assert all(share < 0.3 for share in shares(lines)), lines


def test_the_share_reaches_the_loggers_at_the_steps_of_the_modules_scalars():
    logger = Recording()
    lines = fit(item_delay=0.02, logger=logger)
    waits = [(m["train/data_wait"], step) for m, step in logger.calls if "train/data_wait" in m]
    losses = [step for m, step in logger.calls if "train/loss" in m]
    assert [step for _, step in waits] == losses == [EVERY - 1, 2 * EVERY - 1]
    assert all(share > 0.5 for share, _ in waits)
    # the line rounds the scalar it logged
    assert shares(lines) == [pytest.approx(round(share * 100) / 100) for share, _ in waits]


def test_tensorboard_gets_train_data_wait(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    fit(item_delay=0.01, logger=logger)
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "train/data_wait" in events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("train/data_wait")] == [EVERY - 1, 2 * EVERY - 1]
