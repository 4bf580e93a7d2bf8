"""Import espnet2 modules without their offline-hostile side effects.

Importing ``espnet2.tasks.asr`` pulls in ``g2p_en``, which calls ``nltk.download``
at import time for data it only needs when a ``g2p_en`` tokenizer is actually used.
Without internet that costs a network timeout and prints alarming ``[nltk_data]
Error loading ...`` lines on every worker. espnet's attention module also prints a
line about Flash Attention on import (to stdout before 202609, to stderr since). Neither
matters to espnet3, so every espnet2 import in this package goes through
:func:`import_espnet2`. It also puts torchaudio's transducer loss where ESPnet2 looks for
warp-transducer's, when that is not installed (:mod:`espnet3.utils.warprnnt`).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from types import ModuleType

from espnet3.utils import warprnnt

FLASH_ATTENTION_LINE = "Failed to import Flash Attention"


@contextlib.contextmanager
def _offline_nltk():
    try:
        import nltk
    except ImportError:
        yield
        return
    original = nltk.download
    # g2p_en only needs the data for G2p(), which raises its own LookupError later if
    # somebody really asks for a g2p_en tokenizer without the data installed.
    nltk.download = lambda *args, **kwargs: False
    try:
        yield
    finally:
        nltk.download = original


def import_espnet2(module: str) -> ModuleType:
    """Import ``module`` (an ``espnet``/``espnet2`` module path) quietly."""
    if module in sys.modules:
        return sys.modules[module]
    warprnnt.install()
    stderr = io.StringIO()
    try:
        with _offline_nltk(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            return importlib.import_module(module)
    finally:
        # espnet >= 202609 prints the Flash Attention line to stderr; anything else there is kept.
        kept = [line for line in stderr.getvalue().splitlines(keepends=True) if FLASH_ATTENTION_LINE not in line]
        sys.stderr.write("".join(kept))
