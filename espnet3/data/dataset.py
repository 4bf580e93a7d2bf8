"""A data directory as a map-style dataset of ``(utt_id, {"speech", "text"})`` items.

Items have ESPnet2's shape (float32 waveform, int64 token ids), so ESPnet2's ``CommonCollateFn``
turns a list of them into the ``(ids, batch)`` pairs that ``model(**batch)`` expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile
from torch.utils.data import Dataset

from espnet3.data.datadir import DataDir
from espnet3.data.tokenizer import TextTokenizer


class SpeechTextDataset(Dataset):
    """Audio read on access, transcripts tokenised once up front (batching needs their lengths).

    Holds only paths, ints and small arrays, so it pickles cheaply into DataLoader workers and
    Ray tasks.
    """

    def __init__(
        self, utt_ids: Sequence[str], wav: Sequence[Path], num_samples: Sequence[int], text: Sequence[np.ndarray]
    ):
        self.utt_ids = list(utt_ids)
        self.wav = [str(p) for p in wav]
        self.num_samples = [int(n) for n in num_samples]
        self.text = list(text)

    @classmethod
    def from_datadir(cls, datadir: DataDir, tokenizer: TextTokenizer) -> SpeechTextDataset:
        utts = datadir.utt_ids
        return cls(
            utts,
            [datadir.wav[u] for u in utts],
            [datadir.num_samples[u] for u in utts],
            [tokenizer.encode(datadir.text[u]) for u in utts],
        )

    def subset(self, indices: Sequence[int]) -> SpeechTextDataset:
        return SpeechTextDataset(
            [self.utt_ids[i] for i in indices],
            [self.wav[i] for i in indices],
            [self.num_samples[i] for i in indices],
            [self.text[i] for i in indices],
        )

    @property
    def lengths(self) -> list[tuple[int, int]]:
        """``(num_samples, num_tokens)`` per utterance: what one item adds to a padded batch."""
        return [(n, len(t)) for n, t in zip(self.num_samples, self.text)]

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, index: int) -> tuple[str, dict[str, np.ndarray]]:
        speech, _ = soundfile.read(self.wav[index], dtype="float32")
        # A dataset shipped to Ray tasks holds read-only arrays (zero-copy from the object
        # store), which torch.from_numpy in the collate function warns about.
        return self.utt_ids[index], {"speech": speech, "text": self.text[index].copy()}
