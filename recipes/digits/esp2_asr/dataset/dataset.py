"""One split of the digits corpus: ``{"speech": float32 samples, "text": "ONE TWO"}`` items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from espnet3.components.data.base_dataset import BaseDataset
from espnet3.contract import Field

from .builder import corpus_dir


def _table(path: Path) -> dict[str, str]:
    rows = (line.rstrip("\n").split(maxsplit=1) for line in path.read_text(encoding="utf-8").splitlines())
    return {row[0]: row[1] if len(row) > 1 else "" for row in rows}


class DigitsDataset(BaseDataset):
    fields = (Field("speech", "audio"), Field("text", "text"))

    def __init__(self, split: str, recipe_dir: str | Path | None = None) -> None:
        root = corpus_dir(recipe_dir or Path(__file__).resolve().parents[1]) / split
        texts = _table(root / "text")
        wavs = _table(root / "wav.scp")
        self.items = [(utt, wavs[utt], texts[utt]) for utt in sorted(texts)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        _, wav, text = self.items[int(index)]
        samples, _ = sf.read(wav, dtype="float32")
        return {"speech": np.asarray(samples, dtype=np.float32), "text": text}
