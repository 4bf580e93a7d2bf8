"""Where one split's data comes from: a Kaldi directory, ESPnet2 ``[path, name, type]`` triples, or a class.

The three forms a ``data.train`` / ``data.valid`` / ``data.test.<name>`` entry may take:

* a directory path (the shorthand): ``wav.scp`` is read as ``speech`` and ``text`` as ``text``,
  exactly what ``asr.sh`` passes for a ``dump/raw`` directory; or a shard directory written by
  ``python -m espnet3.data.shard`` (its ``shards.json`` says so, :mod:`espnet3.data.shard_format`);
* a list of ESPnet2 triples, written as ``[path, name, type]`` lists or ``"path,name,type"``
  strings (``--train_data_path_and_name_and_type``), with any loader type of ESPnet2's
  ``espnet2.train.dataset.DATA_TYPES``;
* ``{_target_: pkg.Dataset, ...}``: any map-style dataset whose items are ``(utt_id, dict)`` or a
  dict of arrays (upstream ESPnet3's dataset modules).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from espnet3.errors import DataError

EXAMPLE_TRIPLES = "[[dump/raw/train/wav.scp, speech, sound], [dump/raw/train/text, text, text]]"

# The shorthand's files and the ESPnet2 names asr.sh gives them.
SHORTHAND_FILES = (("wav.scp", "speech"), ("text", "text"))


@dataclass(frozen=True)
class DataTriple:
    """One ESPnet2 data stream: ``path`` read by ESPnet2's loader ``type`` as the batch key ``name``."""

    path: Path
    name: str
    type: str

    def as_espnet2(self) -> tuple[str, str, str]:
        return str(self.path), self.name, self.type


def _loader_types() -> tuple[str, ...]:
    from espnet3.utils.espnet2_imports import import_espnet2

    return tuple(import_espnet2("espnet2.train.dataset").DATA_TYPES)


def check_loader_type(loader_type: str, where: str) -> None:
    """Raise unless ESPnet2's dataset has a loader for ``loader_type`` (patterns such as ``rand_int_\\d+_\\d+``)."""
    known = _loader_types()
    if not any(re.fullmatch(pattern, loader_type) for pattern in known):
        import difflib

        close = difflib.get_close_matches(loader_type, known, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise DataError(
            f"`{where}`: loader type `{loader_type}` is not one of ESPnet2's{hint}; "
            f"use one of {', '.join(known)}"
        )


@dataclass(frozen=True)
class SplitSource:
    """One split's data, as configured.

    Attributes:
        key: the config key it came from (``data.train``), for error messages.
        triples: the ESPnet2 data streams; empty for a ``_target_`` dataset or an unresolved shorthand.
        directory: the Kaldi directory of the shorthand form.
        target: the ``{_target_: ...}`` block of a dataset class.
        shards: a shard directory (once resolved); its array streams are ``shard_names`` and
            ``triples`` are its list files (``text``...).
    """

    key: str
    triples: tuple[DataTriple, ...] = ()
    directory: Path | None = None
    target: dict[str, Any] | None = None
    shards: Path | None = None
    shard_names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, key: str, raw: Any) -> SplitSource:
        if isinstance(raw, (str, Path)):
            if not str(raw):
                raise DataError(f"`{key}` is empty; give a data directory, a list of triples or a _target_ block")
            return cls(key=key, directory=Path(raw))
        if isinstance(raw, Mapping):
            if "_target_" not in raw:
                raise DataError(
                    f"`{key}` is a mapping without `_target_`; write {{_target_: pkg.MyDataset, ...}} for a "
                    f"dataset class, a directory path, or ESPnet2 triples like {EXAMPLE_TRIPLES}"
                )
            return cls(key=key, target=dict(raw))
        if isinstance(raw, Sequence) and raw:
            triples = tuple(_parse_triple(f"{key}[{i}]", entry) for i, entry in enumerate(raw))
            names = [t.name for t in triples]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise DataError(f"`{key}` names the data key(s) {', '.join(duplicates)} more than once; "
                                "give every [path, name, type] triple its own name")
            return cls(key=key, triples=triples)
        raise DataError(
            f"`{key}` is {raw!r}; expected a data directory, a list of ESPnet2 [path, name, type] triples "
            f"such as {EXAMPLE_TRIPLES}, or {{_target_: pkg.MyDataset, ...}}"
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The data keys this split provides (empty for a ``_target_`` dataset: known only once loaded)."""
        resolved = self.resolved()
        return resolved.shard_names + tuple(t.name for t in resolved.triples)

    @property
    def description(self) -> str:
        if self.target is not None:
            return str(self.target["_target_"])
        if self.directory is not None:
            return str(self.directory)
        return ", ".join(f"{t.path}:{t.name}:{t.type}" for t in self.triples)

    def resolved(self) -> SplitSource:
        """The shorthand turned into triples (needs the directory to exist); other forms unchanged."""
        if self.directory is None or self.triples or self.shards is not None:
            return self
        from espnet3.data.shard_format import ShardManifest, is_shard_dir

        if is_shard_dir(self.directory):
            manifest = ShardManifest.load(self.directory, self.key)
            return replace(self, shards=self.directory, shard_names=manifest.names,
                           triples=tuple(DataTriple(self.directory / f, n, t) for f, n, t in manifest.lists))
        return replace(self, triples=shorthand_triples(self.directory, self.key))

    def with_absolute_paths(self) -> SplitSource:
        """Paths made absolute: Ray workers do not run in the launcher's directory."""
        return replace(
            self,
            directory=self.directory.resolve() if self.directory is not None else None,
            shards=self.shards.resolve() if self.shards is not None else None,
            triples=tuple(replace(t, path=t.path.resolve()) for t in self.triples),
        )


def _parse_triple(where: str, entry: Any) -> DataTriple:
    parts = entry.split(",") if isinstance(entry, str) else entry
    if not (isinstance(parts, Sequence) and not isinstance(parts, str) and len(parts) == 3
            and all(isinstance(p, str) and p for p in parts)):
        raise DataError(
            f"`{where}` is {entry!r}; expected an ESPnet2 [path, name, type] triple (or 'path,name,type'), "
            f"e.g. {EXAMPLE_TRIPLES}"
        )
    path, name, loader_type = (p.strip() for p in parts)
    check_loader_type(loader_type, where)
    return DataTriple(Path(path), name, loader_type)


def _needs_kaldiio(wav_scp: Path) -> bool:
    """Whether wav.scp holds Kaldi pipes (``cmd |``) or ark offsets, which only kaldiio reads."""
    with wav_scp.open(encoding="utf-8") as f:
        for line in f:
            value = line.strip().partition(" ")[2].strip()
            if value.endswith("|") or re.search(r"\.ark:\d+$", value) or value.startswith("ark:"):
                return True
    return False


def shorthand_triples(directory: Path, key: str) -> tuple[DataTriple, ...]:
    """``wav.scp`` -> ``speech`` and ``text`` -> ``text``, as asr.sh passes a dump directory.

    ``wav.scp`` lines with pipes or ark offsets are read by ESPnet2's ``kaldi_ark`` loader
    (kaldiio); plain audio paths by ``sound`` (soundfile: WAV, FLAC, ...).
    """
    if not directory.is_dir():
        raise DataError(
            f"data directory {directory} (`{key}`) does not exist; expected a directory with wav.scp and text, "
            f"or give ESPnet2 triples like {EXAMPLE_TRIPLES}"
        )
    triples = []
    for filename, name in SHORTHAND_FILES:
        path = directory / filename
        if not path.is_file():
            raise DataError(
                f"{path} is missing; expected a Kaldi-style data directory with wav.scp and text (`{key}`), "
                f"or list the files as ESPnet2 triples like {EXAMPLE_TRIPLES}"
            )
        loader_type = "text"
        if filename == "wav.scp":
            loader_type = "kaldi_ark" if _needs_kaldiio(path) else "sound"
        triples.append(DataTriple(path, name, loader_type))
    return tuple(triples)
