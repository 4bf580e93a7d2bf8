"""The exceptions a bad input raises before any Ray worker starts: a config, the data, a sweep file.

Each names what is wrong (the key, the file and line), and the fix. The launcher reports every one
the same way: one line on stderr, exit code 2, no traceback (``--verbose`` shows it).
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A train.yaml problem found before any worker starts.

    The message always names the key, the file and the fix, because the person reading it
    is usually looking at a cluster log, not at the code that parsed the file.
    """

    def __init__(self, key: str, source: str | Path | None, problem: str, fix: str | None):
        """``fix=None`` when ``problem`` already says how to fix it (messages of the checks espnet3 reuses)."""
        self.key = key
        self.source = str(source) if source is not None else "<overrides>"
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.source}: `{key}`: {problem}" + (f". Fix: {fix}" if fix else ""))

    @classmethod
    def from_spec_error(cls, exc: Exception, source: str | Path | None) -> ConfigError:
        """Wrap a spec parser's ``ValueError``/``TypeError``, whose text names the key (first, in
        backticks) and the fix already."""
        match = re.search(r"`([\w.\[\]]+)", str(exc))
        error = cls(match.group(1) if match else "?", source, str(exc), "")
        error.args = (f"{error.source}: {exc}",)
        return error

    @classmethod
    def from_omegaconf(
        cls, exc: OmegaConfBaseException, source: str | Path | None, what: str, fix: str
    ) -> ConfigError:
        """Wrap an OmegaConf error, keeping the key it names and its short message."""
        key = getattr(exc, "full_key", None) or "?"
        return cls(str(key), source, f"{what} ({getattr(exc, 'msg', exc)})", fix)


class DataError(ValueError):
    """A data problem found before any worker starts: names the file (and line) or key, and the fix.

    Raised by the data checks on the launching machine, because a bad line found by a DataLoader
    worker in the middle of a Ray Train run costs a retry of the whole worker group and ends up in
    a log nobody reads. The launcher reports it like a config error (exit code 2, no traceback).
    """


class SweepError(ConfigError):
    """A sweep-file problem found before Ray starts: names the sweep-file key, the file and the fix.

    A ``ConfigError`` so the launcher reports it like a train.yaml error (exit code 2).
    """
