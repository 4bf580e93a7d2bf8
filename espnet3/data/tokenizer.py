"""Text <-> token ids, and the ``tokens.txt`` every model and decoder of a run shares.

Token lists follow ESPnet2's ``tokenize_text --write_vocabulary`` conventions (``<blank>`` first,
``<unk>`` second, ``<sos/eos>`` last, the rest by descending frequency in the training text), so a
model trained here loads in ESPnet2 inference with the same ``tokens.txt`` and ``bpe.model``.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from espnet3.data.checks import read_texts
from espnet3.errors import DataError
from espnet3.data.sources import SplitSource
from espnet3.storage import atomic_write
from espnet3.utils.espnet2_imports import import_espnet2

BLANK, UNK, SOS_EOS = "<blank>", "<unk>", "<sos/eos>"
SPACE = "<space>"
# The data name of class labels (ESPnet2's CLS task); their list is cls.sh's, not a vocabulary's.
LABEL = "label"


def train_sentencepiece(texts: Iterable[str], bpemodel: Path, nbpe: int, model_type: str = "unigram",
                        character_coverage: float = 1.0) -> None:
    """Train ``bpemodel`` on ``texts`` the way ESPnet2's asr.sh does (unigram, full coverage by
    default; an egs3 recipe's ``tokenizer`` block may choose others)."""
    import sentencepiece as spm

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(list(texts)),
            model_writer=model,
            vocab_size=nbpe,
            model_type=model_type,
            character_coverage=character_coverage,
            input_sentence_size=100_000_000,
            minloglevel=2,
        )
    except RuntimeError as err:
        # Typically "Vocabulary size is too high (N). Please set it to a value <= M." on small corpora.
        raise DataError(f"`data.nbpe: {nbpe}` cannot be trained from the training text: {err}") from err
    atomic_write(bpemodel, model.getvalue())


def _build_text_tokenizer(token_type: str, bpemodel: Path | None, g2p: str | None = None,
                          non_linguistic_symbols: str | None = None):
    build_tokenizer = import_espnet2("espnet2.text.build_tokenizer").build_tokenizer
    return build_tokenizer(
        token_type,
        bpemodel=str(bpemodel) if token_type == "bpe" else None,
        space_symbol=SPACE,
        non_linguistic_symbols=non_linguistic_symbols,
        g2p_type=g2p,
    )


@dataclass(frozen=True)
class TokenStream:
    """One token list a run tokenizes with, and the training text it is built from when missing.

    Attributes:
        key: the ESPnet2 option naming the list (``token_list``, ``src_token_list``, ...).
        token_list: where the list is read (or written).
        token_type: ``char``, ``bpe``, ``word`` or ``phn``.
        bpemodel: sentencepiece model (``bpe``), trained with ``nbpe`` units when missing.
        text: the training split's text file this vocabulary covers; ``None`` when the
            split has none (then the list must already exist).
        text_name, split_key: the stream it is built from and the split's key (for messages).
        classes: a class list (cls.sh: labels by descending count, then ``<blank>`` and ``<unk>``,
            no ``<sos/eos>``) instead of a vocabulary.
        cleaner, g2p, non_linguistic_symbols: applied before tokenizing, as in ESPnet2's
            ``tokenize_text --write_vocabulary``.
    """

    key: str
    token_list: Path
    token_type: str
    bpemodel: Path | None
    text: Path | None
    text_name: str = "text"
    split_key: str = "data.train"
    classes: bool = False
    nbpe: int = 30
    cleaner: str | None = None
    g2p: str | None = None
    non_linguistic_symbols: str | None = None


def token_streams(settings: Mapping[str, Any], train: SplitSource, nbpe: int) -> list[TokenStream]:
    """The token lists named in ESPnet2 ``settings`` (``token_list``, ``src_token_list``, ...) as paths.

    A list's text is the training split's ``text``-type stream named after it: ``text`` for
    ``token_list``, ``src_text`` for ``src_token_list``, ``transcript`` for ``transcript_token_list``;
    without a ``text`` stream, ``token_list`` is the class list of a ``label`` stream (cls.sh's).
    Lists given inline (YAML lists) need no building and are skipped.
    """
    texts = {t.name: t.path for t in train.resolved().triples if t.type == "text"}
    streams = []
    for key, value in settings.items():
        if not key.endswith("token_list") or not isinstance(value, (str, Path)):
            continue
        prefix = key[: -len("token_list")]
        candidates = [f"{prefix}text", prefix.rstrip("_")] if prefix else ["text", LABEL]
        name = next((c for c in candidates if c in texts), None)
        text = texts.get(name)

        def option(name: str) -> Any:
            return settings.get(f"{prefix}{name}", settings.get(name) if not prefix else None)

        token_type = "word" if name == LABEL else option("token_type") or "char"
        bpemodel = option("bpemodel")
        streams.append(TokenStream(
            key=key,
            token_list=Path(value),
            token_type=token_type,
            bpemodel=Path(bpemodel) if bpemodel else None,
            text=text,
            text_name=name or candidates[0],
            split_key=train.key,
            classes=name == LABEL,
            nbpe=nbpe,
            cleaner=option("cleaner"),
            g2p=option("g2p"),
            non_linguistic_symbols=option("non_linguistic_symbols"),
        ))
    return streams


def build_token_list(texts: Iterable[str], stream: TokenStream) -> list[str]:
    """ESPnet2 vocabulary of ``texts``: specials around tokens sorted by descending count."""
    tokenizer = _build_text_tokenizer(stream.token_type, stream.bpemodel, stream.g2p, stream.non_linguistic_symbols)
    cleaner = None
    if stream.cleaner:
        cleaner = import_espnet2("espnet2.text.cleaner").TextCleaner(stream.cleaner)
    counts: Counter[str] = Counter()
    for line in texts:
        counts.update(tokenizer.text2tokens(cleaner(line) if cleaner else line))
    # sorted() is stable, so ties keep first-seen order, as in espnet2.bin.tokenize_text.
    tokens = [t for t, _ in sorted(counts.items(), key=lambda item: -item[1]) if t not in (BLANK, UNK, SOS_EOS)]
    if stream.classes:
        # cls.sh: tokenize_text --add_symbol "<unk>:-1" --add_symbol "<blank>:-2"
        return [*tokens, BLANK, UNK]
    return [BLANK, UNK, *tokens, SOS_EOS]


def prepare_token_list(stream: TokenStream) -> Path:
    """Make sure ``stream.token_list`` (and its ``bpemodel`` for bpe) exist; return the token list path.

    Idempotent: an existing token list is reused untouched, so a resumed or re-launched run keeps
    the ids its checkpoints were trained with. Call it once on the driver before building the model.
    """
    bpe = stream.token_type == "bpe"
    if bpe and stream.bpemodel is None:
        raise DataError(f"`{stream.key}` uses token_type bpe but no bpemodel is set; set the matching `bpemodel`")
    if stream.token_list.is_file():
        if bpe and not stream.bpemodel.is_file():
            raise DataError(
                f"{stream.token_list} exists but the bpe model {stream.bpemodel} does not, so the token ids "
                f"cannot be reproduced; delete {stream.token_list} to train both again, or point "
                "`bpemodel` at the model the token list was made with"
            )
        return stream.token_list
    if stream.text is None:
        raise DataError(
            f"`{stream.key}` {stream.token_list} does not exist and `{stream.split_key}` has no "
            f"`{stream.text_name}` text stream to build it from; add it as a [<dir>/<file>, {stream.text_name}, text] "
            "triple, or write the token list"
        )
    texts = read_texts(stream.text)
    if bpe and not stream.bpemodel.is_file():
        train_sentencepiece(texts, stream.bpemodel, stream.nbpe)
    tokens = build_token_list(texts, stream)
    atomic_write(stream.token_list, ("\n".join(tokens) + "\n").encode("utf-8"))
    return stream.token_list


class TextTokenizer:
    """Transcript <-> int64 token ids for one token list.

    Picklable (the sentencepiece processor is built lazily inside each process), so a dataset
    holding one can go to DataLoader workers and Ray tasks.
    """

    def __init__(self, token_type: str, token_list: Path | Sequence[str], bpemodel: Path | None = None):
        self.token_type = token_type
        self._tokenizer = _build_text_tokenizer(token_type, bpemodel)
        converter_cls = import_espnet2("espnet2.text.token_id_converter").TokenIDConverter
        try:
            self._converter = converter_cls(
                str(token_list) if isinstance(token_list, Path) else list(token_list), unk_symbol=UNK
            )
        except RuntimeError as err:
            raise ValueError(
                f"token list {token_list} is not usable ({err}); expected one token per line with "
                f"{UNK} among them (delete it to have it rebuilt from the training text)"
            ) from err

    @classmethod
    def from_stream(cls, stream: TokenStream) -> TextTokenizer:
        return cls(stream.token_type, stream.token_list, stream.bpemodel)

    @property
    def token_list(self) -> list[str]:
        return list(self._converter.token_list)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._converter.tokens2ids(self._tokenizer.text2tokens(text)), dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.tokens2text(self._converter.ids2tokens([int(i) for i in ids]))
