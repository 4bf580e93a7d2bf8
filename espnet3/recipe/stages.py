"""The stages of an egs3 recipe that run in the launching process: ``create_dataset`` and ``train_tokenizer``.

They prepare files every later stage reads (manifests, ``bpe.model``, ``tokens.txt``); the stages
after them run on Ray through the train.yaml of :mod:`espnet3.recipe.convert`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from espnet3.recipe.convert import RoleConfig, plain

SPLITS = ("train", "valid", "test")


def create_dataset(training: RoleConfig) -> list[str | None]:
    """Run each dataset source's ``DatasetBuilder`` once (prepare the source unless prepared, build
    unless built), with the ``create_dataset`` block as keyword arguments, as upstream does.
    Returns the sources prepared (``None`` is the recipe's own ``dataset/``)."""
    from espnet3.components.data.dataset_builder import run_builder
    from espnet3.components.data.dataset_module import load_dataset_module

    t = training.values
    dataset = t.get("dataset") or {}
    kwargs = plain(t.get("create_dataset")) or {}
    prepared: list[str | None] = []
    for split in SPLITS:
        for entry in dataset.get(split) or []:
            source = entry.get("data_src")
            if source in prepared:
                continue
            module = load_dataset_module(data_src=source, recipe_dir=t["recipe_dir"])
            if not hasattr(module, "DatasetBuilder"):
                raise training.error(f"dataset.{split}", f"{module.__name__} exports no `DatasetBuilder`",
                                     "export the builder as `DatasetBuilder` in the dataset package's __init__.py")
            run_builder(module.DatasetBuilder(), **kwargs)
            prepared.append(source)
    if not prepared:
        raise training.error("dataset", "has no entries in train, valid or test",
                             "list the recipe's splits under dataset.train and dataset.valid")
    return prepared


def tokenizer_files(training: RoleConfig) -> tuple[Path, Path] | None:
    """``(bpe.model, tokens.txt)`` under ``tokenizer.save_path``; ``None`` when the recipe has no tokenizer."""
    tokenizer = training.values.get("tokenizer") or {}
    if not tokenizer.get("save_path"):
        return None
    save = Path(str(tokenizer["save_path"]))
    return save / "bpe.model", save / "tokens.txt"


def train_tokenizer(training: RoleConfig) -> tuple[Path, Path]:
    """Train the recipe's sentencepiece model on ``tokenizer.text_builder.func``'s text and write
    ESPnet2's ``tokens.txt`` beside it; kept when both exist (the token ids of a trained model)."""
    from espnet3.data.tokenizer import TokenStream, build_token_list, train_sentencepiece
    from espnet3.storage import atomic_write

    files = tokenizer_files(training)
    if files is None:
        raise training.error("tokenizer.save_path", "not set", "give the tokenizer block (vocab_size, model_type, "
                             "save_path, text_builder.func)")
    bpemodel, token_list = files
    if bpemodel.is_file() and token_list.is_file():
        return files
    tokenizer = training.values["tokenizer"]
    texts = _texts(training, tokenizer.get("text_builder") or {})
    train_sentencepiece(texts, bpemodel, int(tokenizer.get("vocab_size") or 30),
                        model_type=str(tokenizer.get("model_type") or "unigram"),
                        character_coverage=float(tokenizer.get("character_coverage") or 1.0))
    stream = TokenStream(key="tokenizer.save_path", token_list=token_list, token_type="bpe", bpemodel=bpemodel,
                         text=None)
    atomic_write(token_list, ("\n".join(build_token_list(texts, stream)) + "\n").encode("utf-8"))
    return files


def _texts(training: RoleConfig, builder: Mapping[str, Any]) -> list[str]:
    func = builder.get("func")
    if not func or "." not in str(func):
        raise training.error("tokenizer.text_builder.func", f"{func!r} is not a dotted function path",
                             "name the function returning the training text, e.g. src.tokenizer.gather_training_text")
    module, name = str(func).rsplit(".", 1)
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise training.error("tokenizer.text_builder.func", f"{func} does not import ({exc})",
                             "check the module path (relative to the recipe directory)") from None
    built = function(**{k: v for k, v in plain(builder).items() if k != "func"})
    if isinstance(built, (str, os.PathLike)):
        return Path(built).read_text(encoding="utf-8").splitlines()
    if isinstance(built, Iterable):
        return [str(t) for t in built]
    raise training.error("tokenizer.text_builder.func", f"returned a {type(built).__name__}",
                         "return a text file's path or an iterable of strings")
