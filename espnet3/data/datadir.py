"""The ``data:`` section of train.yaml and the Kaldi-style directories it names.

A data directory holds ``wav.scp`` (``<utt_id> <audio path>``), ``text`` (``<utt_id> <transcript>``)
and optionally ``utt2spk``. Everything wrong with one is reported as a ``ValueError`` of the form
``<file>:<line>: <problem>; expected <what a good line looks like>``, before any worker starts,
because a bad line found by a DataLoader worker in the middle of a Ray Train run costs a retry of
the whole worker group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile
from omegaconf import DictConfig, OmegaConf

TOKEN_TYPES = ("char", "bpe")
_DATA_KEYS = ("train", "valid", "test", "token_type", "nbpe", "bpemodel", "token_list", "digits")


def plain_mapping(section: Any, where: str, allowed: Sequence[str] | None = None) -> dict[str, Any]:
    """A config section (OmegaConf node or mapping) as a plain, resolved ``dict``.

    Specs are parsed from plain dicts so they pickle into Ray workers without OmegaConf and so
    ``${...}`` interpolations are resolved once, on the driver. With ``allowed``, unknown keys
    raise ``ValueError`` naming them.
    """
    if isinstance(section, DictConfig):
        raw = OmegaConf.to_container(section, resolve=True)
    elif isinstance(section, Mapping):
        raw = dict(section)
    else:
        raise ValueError(f"`{where}` must be a mapping, got {type(section).__name__}: {section!r}")
    unknown = sorted(set(raw) - set(allowed)) if allowed is not None else []
    if unknown:
        raise ValueError(
            f"unknown key(s) in `{where}`: {', '.join(unknown)}; valid keys are {', '.join(allowed)}"
        )
    return raw


@dataclass(frozen=True)
class DataSpec:
    """The parsed ``data:`` section: where each split lives and how text becomes token ids.

    Attributes:
        train: Training data directory.
        valid: Validation data directory.
        test: Evaluation splits, name -> directory.
        token_type: ``char`` or ``bpe`` (sentencepiece).
        nbpe: Sentencepiece vocabulary size (``bpe`` only).
        bpemodel: Sentencepiece model path, trained from the training text if missing (``bpe``).
        token_list: ``tokens.txt`` path, written from the training text if missing.
        digits: Options for the synthetic digits corpus; read by the launcher, not here.
    """

    train: Path
    valid: Path
    token_list: Path
    test: dict[str, Path] = field(default_factory=dict)
    token_type: str = "char"
    nbpe: int = 30
    bpemodel: Path | None = None
    digits: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.token_type not in TOKEN_TYPES:
            raise ValueError(
                f"`data.token_type` is {self.token_type!r}; expected one of {', '.join(TOKEN_TYPES)}"
            )
        if self.token_type == "bpe":
            if self.bpemodel is None:
                raise ValueError(
                    "`data.bpemodel` is required with `data.token_type: bpe`; set it to the path "
                    "where the sentencepiece model should be trained or read, e.g. ${exp_dir}/bpe.model"
                )
            if isinstance(self.nbpe, bool) or not isinstance(self.nbpe, int) or self.nbpe < 1:
                raise ValueError(f"`data.nbpe` must be a positive integer, got {self.nbpe!r}")
        for name in self.test:
            if name in ("train", "valid"):
                raise ValueError(
                    f"`data.test` has a split named {name!r}, which clashes with `data.{name}`; "
                    "rename it (e.g. test_clean)"
                )

    @classmethod
    def from_config(cls, section: Any) -> DataSpec:
        """Parse ``cfg.data``; unknown or missing keys raise ``ValueError`` naming the key."""
        raw = plain_mapping(section, "data", _DATA_KEYS)
        for key in ("train", "valid", "token_list"):
            if raw.get(key) in (None, "", "???"):
                raise ValueError(f"`data.{key}` is required (a path); see docs/train_yaml.md")
        test = raw.get("test") or {}
        if not isinstance(test, Mapping):
            raise ValueError(
                f"`data.test` must map split names to directories, e.g. {{test: data/test}}; got {test!r}"
            )
        bpemodel = raw.get("bpemodel")
        return cls(
            train=Path(raw["train"]),
            valid=Path(raw["valid"]),
            token_list=Path(raw["token_list"]),
            test={str(k): Path(v) for k, v in test.items()},
            token_type=raw.get("token_type", "char"),
            nbpe=raw.get("nbpe", 30),
            bpemodel=Path(bpemodel) if bpemodel else None,
            digits=raw.get("digits"),
        )

    def split_dir(self, split: str) -> Path:
        """The directory of ``train``, ``valid`` or an evaluation split named in ``data.test``."""
        if split == "train":
            return self.train
        if split == "valid":
            return self.valid
        if split in self.test:
            return self.test[split]
        known = ["train", "valid", *self.test]
        raise ValueError(f"unknown data split {split!r}; this config has {', '.join(known)} (see `data.test`)")


@dataclass(frozen=True)
class DataDir:
    """One parsed data directory, utterances in ``wav.scp`` order.

    ``num_samples`` comes from the audio headers (``soundfile.info``), so batching by length never
    decodes audio.
    """

    path: Path
    wav: dict[str, Path]
    text: dict[str, str]
    num_samples: dict[str, int]
    sample_rate: int
    utt2spk: dict[str, str] | None = None

    @property
    def utt_ids(self) -> list[str]:
        return list(self.wav)


def _read_table(path: Path, expected: str, allow_empty_value: bool) -> tuple[dict[str, str], dict[str, int]]:
    """``<key> <value>`` lines -> (key -> value, key -> 1-based line number)."""
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.strip().split(maxsplit=1)
            if not parts:
                raise ValueError(f"{path}:{lineno}: empty line; expected {expected}")
            key = parts[0]
            value = parts[1].strip() if len(parts) == 2 else ""
            if not value and not allow_empty_value:
                raise ValueError(f"{path}:{lineno}: {key!r} has no value; expected {expected}")
            if key in lines:
                raise ValueError(
                    f"{path}:{lineno}: utterance {key!r} repeats line {lines[key]}; "
                    f"expected each utterance once"
                )
            values[key] = value
            lines[key] = lineno
    return values, lines


def _check_same_keys(
    a_path: Path, a_lines: dict[str, int], b_path: Path, b_lines: dict[str, int], what: str
) -> None:
    for key, lineno in a_lines.items():
        if key not in b_lines:
            raise ValueError(
                f"{a_path}:{lineno}: utterance {key!r} has no line in {b_path}; "
                f"expected every utterance in {a_path.name} to have {what} in {b_path.name}"
            )


def read_datadir(path: str | Path) -> DataDir:
    """Parse and check a Kaldi/ESPnet2 data directory (``wav.scp``, ``text``, optional ``utt2spk``).

    Audio paths are resolved relative to the current directory, as in ESPnet2 recipes. Every file
    must be a readable mono audio file and all must share one sample rate, because the model's
    frontend assumes both.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(
            f"data directory {path} does not exist; expected a directory with wav.scp and text "
            "(check `data.train` / `data.valid` / `data.test` in train.yaml)"
        )
    wav_scp, text_file, utt2spk_file = path / "wav.scp", path / "text", path / "utt2spk"
    for required in (wav_scp, text_file):
        if not required.is_file():
            raise ValueError(f"{required} is missing; expected a Kaldi-style data directory with wav.scp and text")

    wav_expected = "'<utt_id> <path to a mono audio file>'"
    wav_raw, wav_lines = _read_table(wav_scp, wav_expected, allow_empty_value=False)
    if not wav_raw:
        raise ValueError(f"{wav_scp}: no utterances; expected at least one line {wav_expected}")
    text, text_lines = _read_table(text_file, "'<utt_id> <transcript>'", allow_empty_value=True)
    _check_same_keys(wav_scp, wav_lines, text_file, text_lines, "a transcript")
    _check_same_keys(text_file, text_lines, wav_scp, wav_lines, "audio")

    utt2spk = None
    if utt2spk_file.is_file():
        utt2spk, spk_lines = _read_table(utt2spk_file, "'<utt_id> <speaker_id>'", allow_empty_value=False)
        _check_same_keys(wav_scp, wav_lines, utt2spk_file, spk_lines, "a speaker")
        _check_same_keys(utt2spk_file, spk_lines, wav_scp, wav_lines, "audio")

    wav: dict[str, Path] = {}
    num_samples: dict[str, int] = {}
    sample_rate: int | None = None
    first_rate_line = 0
    for utt, value in wav_raw.items():
        where = f"{wav_scp}:{wav_lines[utt]}"
        if value.endswith("|") or len(value.split()) != 1:
            raise ValueError(
                f"{where}: {value!r} is not a single file path; expected {wav_expected} "
                "(pipes and ark offsets are not supported: write the audio to files first)"
            )
        audio = Path(value)
        if not audio.is_file():
            raise ValueError(
                f"{where}: audio file {audio} does not exist (relative paths are resolved from {Path.cwd()}); "
                f"expected {wav_expected}"
            )
        try:
            info = soundfile.info(str(audio))
        except RuntimeError as err:  # soundfile.LibsndfileError
            raise ValueError(f"{where}: cannot read audio file {audio} ({err}); expected a WAV/FLAC file") from err
        if info.channels != 1:
            raise ValueError(f"{where}: {audio} has {info.channels} channels; expected mono audio")
        if sample_rate is None:
            sample_rate, first_rate_line = info.samplerate, wav_lines[utt]
        elif info.samplerate != sample_rate:
            raise ValueError(
                f"{where}: {audio} is {info.samplerate} Hz but line {first_rate_line} is {sample_rate} Hz; "
                "expected one sample rate per data directory (resample the audio)"
            )
        wav[utt] = audio
        num_samples[utt] = int(info.frames)

    return DataDir(
        path=path,
        wav=wav,
        text={utt: text[utt] for utt in wav},
        num_samples=num_samples,
        sample_rate=int(sample_rate),
        utt2spk=utt2spk,
    )
