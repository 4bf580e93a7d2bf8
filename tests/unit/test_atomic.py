"""A process killed while it writes a checkpoint, an export or metrics.json leaves the previous file whole.

The writer is a real subprocess, SIGKILLed from here at the moment it is half-way through: the
bytes of the new file are on disk but not yet in place.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from espnet3.storage import atomic_save, atomic_write_json
from paths import REPO

# Each writer signals through `ready` once the new content is partly written, then waits to be killed.
WRITERS = {
    "metrics.json": """
import json, os, sys, time
from espnet3 import storage as atomic
real_fsync = os.fsync
def stalled_fsync(fd):  # the data is written, the rename not yet done
    real_fsync(fd); open(sys.argv[2], "w").close(); time.sleep(600)
atomic.os.fsync = stalled_fsync
atomic.atomic_write_json(sys.argv[1], {"cer": 99.0, "padding": "x" * 1_000_000})
""",
    "model.pth": """
import sys, time, torch
from espnet3.storage import atomic_save
def save(tmp):
    with open(tmp, "wb") as f:
        f.write(b"PK" * 500_000)  # the first half of a torch.save
        f.flush()
        open(sys.argv[2], "w").close()
        time.sleep(600)
atomic_save(sys.argv[1], save)
""",
}


def _write(path: Path, value: float) -> None:
    if path.suffix == ".json":
        atomic_write_json(path, {"cer": value})
    else:
        atomic_save(path, lambda tmp: torch.save({"w": torch.full((3,), value)}, tmp))


def _read(path: Path) -> float:
    if path.suffix == ".json":
        return json.loads(path.read_text())["cer"]
    return float(torch.load(path)["w"][0])


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_writer_killed_mid_write_leaves_the_previous_file_intact(name, tmp_path):
    target, ready = tmp_path / name, tmp_path / "ready"
    _write(target, 5.0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", WRITERS[name], str(target), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline, "the writer never got half-way"
            time.sleep(0.05)
        temp = [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.")]
        assert temp and temp[0].stat().st_size > 0, "the new content goes to a temp file beside the target"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert _read(target) == 5.0
    _write(target, 1.0)  # the leftover temp file does not disturb the next writer
    assert _read(target) == 1.0
