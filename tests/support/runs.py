"""Helpers of the end-to-end tests that run ``python -m espnet3.launch`` as a user would.

A run's attempts are counted from its rank logs (every worker process start writes one
``===== <time> pid <pid> =====`` line); Ray Train's worker processes are found in the process table.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

TIMEOUT_S = 420


def data_overrides(exp: Path, data: Path) -> list[str]:
    return [f"exp_dir={exp}", f"data.train={data}/train", f"data.valid={data}/valid", f"data.test.test={data}/test"]


def user_env(**extra: str) -> dict[str, str]:
    """A user's shell: no cluster named, one torch thread per worker."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_API_SERVER_ADDRESS", None)
    return env


def wait_for(predicate, what: str, proc: subprocess.Popen | None = None, timeout: float = TIMEOUT_S,
             logs: tuple[Path, ...] = ()):
    """``predicate()``'s first true value within ``timeout``; a failure shows the run's output and
    the tails of ``logs`` (a launcher's log file, rank logs) as they are then."""
    def tails() -> str:
        return "".join(f"\n--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n{output[-3000:]}{tails()}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}{tails()}")


def attempts(exp: Path, rank: int = 0) -> int:
    log = exp / "logs" / f"rank{rank}.log"
    return sum(line.startswith("===== ") for line in log.read_text().splitlines()) if log.exists() else 0


def train_result(exp: Path) -> dict:
    return json.loads((exp / "train_result.json").read_text())["metrics"]


def steps_per_epoch(exp: Path, world_size: int = 2) -> int:
    from omegaconf import OmegaConf

    from espnet3.config import load_config
    from espnet3.data.plan import build_data_plan

    cfg = OmegaConf.to_container(load_config(exp / "train.yaml"), resolve=True)
    return len(build_data_plan(cfg, splits=["train"]).dataloader("train", rank=0, world_size=world_size))


# --------------------------------------------------------------------------------- process table
def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every process this user can see."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = (ppid, cmdline)
    return table


def train_workers(root: int) -> list[int]:
    """Ray Train worker processes descending from process ``root`` (a launcher or a node's group)."""
    table = processes()

    def descends(pid: int) -> bool:
        while pid > 1 and pid in table:
            if pid == root:
                return True
            pid = table[pid][0]
        return False

    return [pid for pid, (_, cmd) in table.items() if "RayTrainWorker" in cmd and descends(pid)]
