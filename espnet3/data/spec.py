"""The ``data:`` section of train.yaml, parsed once into a typed spec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from espnet3.errors import DataError
from espnet3.data.sources import SplitSource

# Token types espnet3 can build a token list for from the training text (ESPnet2's
# tokenize_text --write_vocabulary does the same for these).
TOKEN_TYPES = ("char", "bpe", "word", "phn")
_DATA_KEYS = ("train", "valid", "test", "token_type", "nbpe", "bpemodel", "token_list", "valid_preprocess", "digits",
              "synth")
VALID_PREPROCESS = ("eval", "train")


def plain_mapping(section: Any, where: str, allowed: Sequence[str] | None = None) -> dict[str, Any]:
    """A config section (OmegaConf node or mapping) as a plain, resolved ``dict``.

    Specs are parsed from plain dicts so they pickle into Ray workers without OmegaConf and so
    ``${...}`` interpolations are resolved once, on the driver. With ``allowed``, unknown keys
    raise ``ValueError`` naming them.
    """
    if isinstance(section, (DictConfig, ListConfig)):
        section = OmegaConf.to_container(section, resolve=True)
    if not isinstance(section, Mapping):
        raise ValueError(f"`{where}` must be a mapping, got {type(section).__name__}: {section!r}")
    raw = dict(section)
    unknown = sorted(set(raw) - set(allowed)) if allowed is not None else []
    if unknown:
        raise ValueError(
            f"unknown key(s) in `{where}`: {', '.join(unknown)}; valid keys are {', '.join(allowed)}"
        )
    return raw


@dataclass(frozen=True)
class DataSpec:
    """The parsed ``data:`` section: each split's source, and the vocabulary built from the training text.

    Attributes:
        train: Training data (a Kaldi directory, ESPnet2 triples or a ``_target_`` dataset).
        valid: Validation data, same forms.
        test: Evaluation splits, name -> source.
        token_type: ``char``, ``bpe``, ``word`` or ``phn``: the default of ``preprocessor.token_type``.
        nbpe: Sentencepiece vocabulary size for every bpe token list trained here.
        bpemodel: Sentencepiece model path, trained from the training text if missing (``bpe``).
        token_list: ``tokens.txt`` path, written from the training text if missing.
        valid_preprocess: ``eval`` (ESPnet2's validation preprocessing) or ``train``: validate on
            data prepared like the training data, e.g. speaker ID on held-out utterances of the
            training speakers (ESPnet2's speaker preprocessor expects trial pairs otherwise).
        digits: Options for the synthetic digits corpus; read by the launcher, not here.
        synth: Options for a synthetic task corpus (``espnet3.corpora.synth``: ``task``, ``dir``,
            ``num_train``, ...); read by the launcher, not here.
    """

    train: SplitSource
    valid: SplitSource
    token_list: Path
    test: dict[str, SplitSource] = field(default_factory=dict)
    token_type: str = "char"
    nbpe: int = 30
    bpemodel: Path | None = None
    valid_preprocess: str = "eval"
    digits: dict[str, Any] | None = None
    synth: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.token_type not in TOKEN_TYPES:
            raise DataError(
                f"`data.token_type` is {self.token_type!r}; expected one of {', '.join(TOKEN_TYPES)}"
            )
        if self.token_type == "bpe":
            if self.bpemodel is None:
                raise DataError(
                    "`data.bpemodel` is required with `data.token_type: bpe`; set it to the path "
                    "where the sentencepiece model should be trained or read, e.g. ${exp_dir}/bpe.model"
                )
        if isinstance(self.nbpe, bool) or not isinstance(self.nbpe, int) or self.nbpe < 1:
            raise DataError(f"`data.nbpe` must be a positive integer, got {self.nbpe!r}")
        if self.valid_preprocess not in VALID_PREPROCESS:
            raise DataError(
                f"`data.valid_preprocess` is {self.valid_preprocess!r}; expected one of {', '.join(VALID_PREPROCESS)}"
            )
        if self.synth is not None and not (isinstance(self.synth, Mapping) and {"task", "dir"} <= set(self.synth)):
            raise DataError(
                f"`data.synth` is {self.synth!r}; expected {{task: lid, dir: data/lid, num_train: ...}} "
                "(see python -m espnet3.corpora.synth --help)"
            )
        for name in self.test:
            if name in ("train", "valid"):
                raise DataError(
                    f"`data.test` has a split named {name!r}, which clashes with `data.{name}`; "
                    "rename it (e.g. test_clean)"
                )

    @classmethod
    def from_config(cls, section: Any) -> DataSpec:
        """Parse ``cfg.data``; unknown or missing keys raise ``DataError`` naming the key."""
        try:
            raw = plain_mapping(section, "data", _DATA_KEYS)
        except ValueError as err:
            raise DataError(str(err)) from None
        for key in ("train", "valid", "token_list"):
            if raw.get(key) in (None, "", "???"):
                raise DataError(f"`data.{key}` is required; see docs/train_yaml.md")
        test = raw.get("test") or {}
        if not isinstance(test, Mapping):
            raise DataError(
                f"`data.test` must map split names to data (a directory or triples), e.g. "
                f"{{test: data/test}}; got {test!r}"
            )
        bpemodel = raw.get("bpemodel")
        return cls(
            train=SplitSource.parse("data.train", raw["train"]),
            valid=SplitSource.parse("data.valid", raw["valid"]),
            token_list=Path(raw["token_list"]),
            test={str(k): SplitSource.parse(f"data.test.{k}", v) for k, v in test.items()},
            token_type=raw.get("token_type", "char"),
            nbpe=raw.get("nbpe", 30),
            bpemodel=Path(bpemodel) if bpemodel else None,
            valid_preprocess=raw.get("valid_preprocess", "eval"),
            digits=raw.get("digits"),
            synth=raw.get("synth"),
        )

    @property
    def split_names(self) -> tuple[str, ...]:
        return ("train", "valid", *self.test)

    def split(self, name: str) -> SplitSource:
        """The source of ``train``, ``valid`` or an evaluation split named in ``data.test``."""
        if name == "train":
            return self.train
        if name == "valid":
            return self.valid
        if name in self.test:
            return self.test[name]
        raise DataError(
            f"unknown data split {name!r}; this config has {', '.join(self.split_names)} (see `data.test`)"
        )

    def preprocessor_defaults(self) -> dict[str, Any]:
        """What ``data.token_*`` contributes to the ESPnet2 preprocessing args (lowest priority)."""
        defaults: dict[str, Any] = {"token_type": self.token_type, "token_list": str(self.token_list)}
        if self.token_type == "bpe":
            defaults["bpemodel"] = str(self.bpemodel)
        return defaults
