"""Datasets and a preprocessor named by `_target_` in data-plan tests (importable: tests/ is on sys.path)."""

from __future__ import annotations

import numpy as np

from espnet3.utils.espnet2_imports import import_espnet2

WORDS = ("ONE", "TWO", "THREE")


class PairDataset:
    """Items as upstream ESPnet3's datasets return them: ``(utt_id, {"speech": ..., "text": "..."})``."""

    def __init__(self, num_utts: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.items = [
            (f"pair{k:02d}", {"speech": rng.standard_normal(800 + 160 * k).astype(np.float32),
                              "text": " ".join(WORDS[: 1 + k % 3])})
            for k in range(num_utts)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


class DictDataset(PairDataset):
    """Items as a plain dict of arrays (no utterance id)."""

    def __getitem__(self, index: int):
        return self.items[index][1]


class Louder(import_espnet2("espnet2.train.preprocessor").AbsPreprocessor):
    """Scales speech by `gain`; an AbsPreprocessor named by `preprocessor._target_`."""

    def __init__(self, train: bool, gain: float = 2.0):
        super().__init__(train)
        self.gain = gain

    def __call__(self, uid, data):
        return {**data, "speech": data["speech"] * self.gain, "text": np.array([1, 2, 3])}
