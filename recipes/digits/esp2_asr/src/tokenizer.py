"""The tokenizer's training text: the training split's transcripts."""

from __future__ import annotations

from pathlib import Path


def gather_training_text(text_path: str | Path) -> list[str]:
    lines = Path(text_path).read_text(encoding="utf-8").splitlines()
    return [line.split(maxsplit=1)[1] for line in lines if len(line.split(maxsplit=1)) == 2]
