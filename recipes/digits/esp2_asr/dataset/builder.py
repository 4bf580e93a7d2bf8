"""Synthesise the digits corpus into ``<recipe_dir>/data/digits/<split>`` (Kaldi directories)."""

from __future__ import annotations

from pathlib import Path

from espnet3.components.data.dataset_builder import DatasetBuilder

# Small enough for a test; raise num_train for a real model (configs/digits_asr.yaml uses 2000).
SIZES = {"num_train": 60, "num_valid": 12, "num_test": 12, "seed": 0}
SPLITS = ("train", "valid", "test")


def corpus_dir(recipe_dir: str | Path) -> Path:
    return Path(recipe_dir).resolve() / "data" / "digits"


class DigitsBuilder(DatasetBuilder):
    """Nothing to fetch: the source is espeak-ng, and building is synthesising."""

    def is_source_prepared(self, recipe_dir: str | Path = ".", **_kwargs) -> bool:
        return True

    def prepare_source(self, recipe_dir: str | Path = ".", **_kwargs) -> None:
        return None

    def is_built(self, recipe_dir: str | Path = ".", **_kwargs) -> bool:
        root = corpus_dir(recipe_dir)
        return all((root / split / "text").is_file() for split in SPLITS)

    def build(self, recipe_dir: str | Path = ".", **_kwargs) -> None:
        from espnet3.corpora.digits import generate_corpus

        generate_corpus(corpus_dir(recipe_dir), **SIZES)
