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


def write_progress(exp_dir: str | os.PathLike, progress: Mapping[str, Any]) -> None:
    """Rank 0, at each progress line: epoch, step, rates, ETA, losses."""
    storage.atomic_write_json(_path(exp_dir, PROGRESS_FILE), {**progress, "time": time.time()})


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
