"""What produced a run: command, config, code revision, package versions."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import subprocess
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from espnet3 import storage
from espnet3.orchestration.launch_spec import LaunchSpec

RUN_FILE = "run.json"
PACKAGES = ("espnet3", "torch", "torchaudio", "lightning", "ray", "espnet", "omegaconf")


def git_revision(repo: Path) -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str | None]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def write_run_file(exp_dir: Path, spec: LaunchSpec) -> Path:
    record = {
        "command": shlex.join([Path(sys.executable).name, "-m", "espnet3.launch", *sys.argv[1:]]),
        "launched_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git_revision(Path(__file__).resolve().parents[2]),
        "versions": versions(),
        "launch": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()},
    }
    path = storage.pull(exp_dir / RUN_FILE, refresh=True)
    previous = json.loads(path.read_text()) if path.exists() else None
    if previous is not None:
        record["previous_launches"] = previous.pop("previous_launches", []) + [previous]
    return storage.atomic_write_json(path, record)
