"""``DatasetBuilder``: how a recipe prepares its data, and :func:`run_builder`, which runs it.

A recipe's ``dataset`` package exports a builder beside its ``Dataset``. Source preparation
(download, extract) and building (manifests, converted audio) are separate steps, each with a
cheap check, so a rerun skips whatever is already on disk.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class DatasetBuilder(ABC):
    """The four steps of preparing a recipe's data; every method takes keyword arguments only.

    Upstream's ``create_dataset`` stage passes the training config's ``create_dataset`` block as
    keywords (``recipe_dir`` in the egs3 recipes); a builder ignores the ones it does not use.
    """

    @abstractmethod
    def is_source_prepared(self, **kwargs: Any) -> bool:
        """Whether the raw source (downloaded or extracted corpus) is on disk; a cheap check."""

    @abstractmethod
    def prepare_source(self, **kwargs: Any) -> None:
        """Fetch or extract the raw source, so that :meth:`is_source_prepared` becomes true."""

    @abstractmethod
    def is_built(self, **kwargs: Any) -> bool:
        """Whether the task-ready outputs (manifests, converted audio) exist; a cheap check."""

    @abstractmethod
    def build(self, **kwargs: Any) -> None:
        """Write the task-ready outputs from the prepared source."""


def run_builder(builder: DatasetBuilder, **kwargs: Any) -> None:
    """Prepare the source unless prepared, then build unless built, as upstream's ``create_dataset`` does.

    ``kwargs`` are the ``create_dataset`` block (upstream's recipes put ``recipe_dir`` there); every
    step receives them.
    """
    if not isinstance(builder, DatasetBuilder):
        raise TypeError(
            f"{type(builder).__qualname__} is not a DatasetBuilder; subclass "
            "espnet3.components.data.dataset_builder.DatasetBuilder in the recipe's dataset package"
        )
    if not builder.is_source_prepared(**kwargs):
        builder.prepare_source(**kwargs)
    if not builder.is_built(**kwargs):
        builder.build(**kwargs)
