"""A run's live status, kept in ``exp_dir/status/`` for ``python -m espnet3.status EXP_DIR``.

Two writers, two files, so neither overwrites the other's news: the launcher's ``run.json`` (the
stage, the state, a SLURM job id, and the ranks' pace from the stall watchdog's board) and rank
0's ``progress.json`` (the progress line's numbers, at every line). Both are written whole and
atomically (in the bucket when ``exp_dir`` is one), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from espnet3 import storage

STATUS_DIR = "status"
RUN_FILE = "run.json"
PROGRESS_FILE = "progress.json"


def _path(exp_dir: str | os.PathLike, name: str) -> Path:
    return Path(exp_dir) / STATUS_DIR / name


def read(exp_dir: str | os.PathLike, name: str) -> dict[str, Any] | None:
    """One status file of a run (local path or bucket URI); ``None`` when it was never written."""
    location = storage.join(storage.home(exp_dir), STATUS_DIR, name)
    if not storage.is_file(location):
        return None
    return json.loads(storage.read_text(location))


class ProgressWriter:
    """Rank 0's ``progress.json`` at each progress line (epoch, step, rates, ETA, losses), written
    from a thread of its own, the latest record only: a run in a bucket uploads the file, and
    training must not wait for an upload (or fail on a flaky one)."""

    def __init__(self, exp_dir: str | os.PathLike) -> None:
        self.exp_dir = exp_dir
        self._pending: Mapping[str, Any] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="espnet3-status-writer", daemon=True)
        self._thread.start()

    def put(self, progress: Mapping[str, Any]) -> None:
        """Replace the record waiting to be written (an older one is not worth writing any more)."""
        with self._lock:
            self._pending = {**progress, "time": time.time()}
        self._wake.set()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending and stop (bounded: a hung upload does not hold the worker)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                record, self._pending = self._pending, None
            if record is not None:
                try:
                    storage.atomic_write_json(_path(self.exp_dir, PROGRESS_FILE), record)
                except OSError as exc:  # the next record tries again
                    print(f"[espnet3] could not write the status file: {exc}", file=sys.stderr, flush=True)
            if self._closed and self._pending is None:
                return


class RunStatus:
    """The launcher's side: which stage runs, and how the run ended."""

    def __init__(self, exp_dir: str | os.PathLike, stages: list[str]) -> None:
        self.exp_dir = exp_dir
        self.record: dict[str, Any] = {"state": "running", "stages": list(stages), "stage": None,
                                       "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}

    def update(self, **fields: Any) -> None:
        self.record.update(fields, updated=time.time())
        storage.atomic_write_json(_path(self.exp_dir, RUN_FILE), self.record)

    def stage(self, name: str) -> None:
        self.update(stage=name)

    def ranks(self, ranks: Mapping[int, Mapping[str, Any]]) -> None:
        """Every rank's place and pace (the stall watchdog's board), at each of its polls."""
        self.update(ranks={str(r): dict(s) for r, s in sorted(ranks.items())})


def submitted(exp_dir: str | os.PathLike, job: str) -> None:
    """``--slurm``: the job waits in SLURM's queue (``espnet3.status`` asks ``squeue`` how it fares)."""
    status = RunStatus(exp_dir, [])
    status.update(state="submitted", slurm_job=job)
