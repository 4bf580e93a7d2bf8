"""The exception a bad sweep file raises."""

from __future__ import annotations

from espnet3.config.errors import ConfigError


class SweepError(ConfigError):
    """A sweep-file problem found before Ray starts: names the sweep-file key, the file and the fix.

    A ``ConfigError`` so the launcher reports it like a train.yaml error (exit code 2).
    """
