"""Text <-> token ids, and the ``tokens.txt`` every model and decoder of a run shares.

Token lists follow ESPnet2's ``tokenize_text --write_vocabulary`` conventions (``<blank>`` first,
``<unk>`` second, ``<sos/eos>`` last, the rest by descending frequency in the training text), so a
model trained here loads in ESPnet2 inference with the same ``tokens.txt`` and ``bpe.model``.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from espnet3.data.datadir import DataSpec, read_datadir
from espnet3.utils.espnet2_imports import import_espnet2

BLANK, UNK, SOS_EOS = "<blank>", "<unk>", "<sos/eos>"
SPACE = "<space>"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a rename so a crashed or concurrent run never leaves half a token list behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def train_sentencepiece(texts: Iterable[str], bpemodel: Path, nbpe: int) -> None:
    """Train ``bpemodel`` on ``texts`` the way ESPnet2's asr.sh does (unigram, full coverage)."""
    import sentencepiece as spm

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(list(texts)),
            model_writer=model,
            vocab_size=nbpe,
            model_type="unigram",
            character_coverage=1.0,
            input_sentence_size=100_000_000,
            minloglevel=2,
        )
    except RuntimeError as err:
        # Typically "Vocabulary size is too high (N). Please set it to a value <= M." on small corpora.
        raise ValueError(f"`data.nbpe: {nbpe}` cannot be trained from the training text: {err}") from err
    _atomic_write(bpemodel, model.getvalue())


def _build_text_tokenizer(token_type: str, bpemodel: Path | None):
    build_tokenizer = import_espnet2("espnet2.text.build_tokenizer").build_tokenizer
    if token_type == "bpe":
        return build_tokenizer("bpe", bpemodel=str(bpemodel))
    return build_tokenizer("char", space_symbol=SPACE)


def build_token_list(texts: Iterable[str], token_type: str, bpemodel: Path | None = None) -> list[str]:
    """ESPnet2 vocabulary of ``texts``: specials around tokens sorted by descending count."""
    tokenizer = _build_text_tokenizer(token_type, bpemodel)
    counts: Counter[str] = Counter()
    for line in texts:
        counts.update(tokenizer.text2tokens(line))
    # sorted() is stable, so ties keep first-seen order, as in espnet2.bin.tokenize_text.
    tokens = [t for t, _ in sorted(counts.items(), key=lambda item: -item[1]) if t not in (BLANK, UNK, SOS_EOS)]
    return [BLANK, UNK, *tokens, SOS_EOS]


def prepare_token_list(data: DataSpec) -> Path:
    """Make sure ``data.token_list`` (and ``data.bpemodel`` for bpe) exist; return the token list path.

    Idempotent: an existing ``tokens.txt`` is reused untouched, so a resumed or re-launched run keeps
    the ids its checkpoints were trained with. Call it once on the driver before building the model.
    """
    token_list = data.token_list
    bpe = data.token_type == "bpe"
    if token_list.is_file():
        if bpe and not data.bpemodel.is_file():
            raise ValueError(
                f"{token_list} exists but `data.bpemodel` {data.bpemodel} does not, so the token ids "
                f"cannot be reproduced; delete {token_list} to train both again, or point "
                "`data.bpemodel` at the model the token list was made with"
            )
        return token_list
    texts = list(read_datadir(data.train).text.values())
    if bpe and not data.bpemodel.is_file():
        train_sentencepiece(texts, data.bpemodel, data.nbpe)
    tokens = build_token_list(texts, data.token_type, data.bpemodel)
    _atomic_write(token_list, ("\n".join(tokens) + "\n").encode("utf-8"))
    return token_list


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
    def from_spec(cls, data: DataSpec) -> TextTokenizer:
        return cls(data.token_type, data.token_list, data.bpemodel)

    @property
    def token_list(self) -> list[str]:
        return list(self._converter.token_list)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._converter.tokens2ids(self._tokenizer.text2tokens(text)), dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.tokens2text(self._converter.ids2tokens([int(i) for i in ids]))
