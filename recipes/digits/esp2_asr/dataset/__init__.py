"""The spoken-digits corpus as an egs3 recipe dataset: synthesised (espeak-ng), never downloaded."""

from .builder import DigitsBuilder as DatasetBuilder
from .dataset import DigitsDataset as Dataset

__all__ = ["Dataset", "DatasetBuilder"]
