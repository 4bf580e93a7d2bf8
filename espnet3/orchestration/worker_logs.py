"""Inside a Ray Train worker: everything it prints goes to ``exp_dir/logs/rank<N>.log``.

The redirection is of file descriptors 1 and 2, so Lightning's and ESPnet2's log lines, model
summaries, C++ (gloo, NCCL) messages and tracebacks all land in the rank's file, which is
appended to across retries and resumes. Warnings that matter to the person running the job,
those raised by espnet3's or the recipe's own code, are also sent to the driver's console
(:mod:`espnet3.orchestration.console`) once each.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import espnet3

ESPNET3_DIR = Path(espnet3.__file__).resolve().parent
_LIBRARY_DIRS = ("site-packages", "dist-packages")


def rank_log(exp_dir: str | Path, rank: int) -> Path:
    from espnet3.orchestration.console import LOG_DIR

    return Path(exp_dir) / LOG_DIR / f"rank{rank}.log"


@contextmanager
def output_to(log_file: Path) -> Iterator[None]:
    """Send this process's stdout and stderr to ``log_file``: ``sys.stdout``/``sys.stderr`` and
    the file descriptors beneath them (what C++ code and subprocesses write to)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_file, "a", buffering=1) as out, redirect_stdout(out), redirect_stderr(out):
        out.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} =====\n")
        out.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def raised_by_own_code(filename: str) -> bool:
    """Whether a warning comes from espnet3 or the recipe (not from an installed library or Python)."""
    path = Path(filename).resolve()
    if path.is_relative_to(ESPNET3_DIR):
        return True
    if any(part in _LIBRARY_DIRS for part in path.parts):
        return False
    return not path.is_relative_to(Path(sysconfig.get_paths()["stdlib"]).resolve())


@contextmanager
def warnings_to_console(send: Callable[[str], None], rank: int) -> Iterator[None]:
    """Also ``send`` (once per message) the warnings :func:`raised_by_own_code`; all still go to the log."""
    original = warnings.showwarning
    seen: set[str] = set()

    def showwarning(message, category, filename, lineno, file=None, line=None):
        original(message, category, filename, lineno, file, line)
        text = f"{category.__name__}: {message}"
        if raised_by_own_code(filename) and text not in seen:
            seen.add(text)
            send(f"[espnet3] rank {rank} {text} ({Path(filename).name}:{lineno})")

    warnings.showwarning = showwarning
    try:
        yield
    finally:
        warnings.showwarning = original
