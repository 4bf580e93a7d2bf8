"""The one exception type bad data raises."""

from __future__ import annotations


class DataError(ValueError):
    """A data problem found before any worker starts: names the file (and line) or key, and the fix.

    Raised by the data checks on the launching machine, because a bad line found by a DataLoader
    worker in the middle of a Ray Train run costs a retry of the whole worker group and ends up in
    a log nobody reads. The launcher reports it like a config error (exit code 2, no traceback).
    """
