"""``python -m espnet3.status EXP_DIR``: where a run stands, running or finished, local or in a bucket.

Reads what the run keeps (``exp_dir/status/``, its attempts, its reported checkpoints and
``train_result.json``); a run submitted with ``--slurm`` that has not started yet is asked about in
SLURM's queue (``squeue``: PENDING and SLURM's reason).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from typing import Any

from espnet3.driver.signals import EXIT_USAGE


def _ago(t: float | None) -> str:
    return "?" if t is None else f"{max(0.0, time.time() - t):.0f} s ago"


def _slurm_state(job: str) -> str:
    if shutil.which("squeue") is None:
        return "submitted (squeue is not on PATH here)"
    proc = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or not proc.stdout.strip():
        return "not in SLURM's queue (finished, or cancelled: see its slurm-<job>.out)"
    state, _, reason = proc.stdout.strip().splitlines()[0].partition("|")
    return f"{state} ({reason})" if reason and reason != "None" else state


def describe(exp_dir: str) -> list[str]:
    """The status lines of the run in ``exp_dir``."""
    from espnet3 import storage
    from espnet3.orchestration.console import format_eta
    from espnet3.orchestration.elastic import history, read_attempts
    from espnet3.orchestration.pruning import read_reports
    from espnet3.orchestration.status import PROGRESS_FILE, RUN_FILE, read

    exp_dir = storage.localize(exp_dir)  # a bucket run's local copy path, which the readers map back
    home = storage.home(exp_dir)
    run: dict[str, Any] | None = read(exp_dir, RUN_FILE)
    progress = read(exp_dir, PROGRESS_FILE)
    if run is None and progress is None and not storage.exists(storage.join(home, "train_result.json")):
        raise FileNotFoundError(f"{home} holds no espnet3 run (no status/, no train_result.json); give the run's "
                                "exp_dir")
    lines = [f"run: {home}"]
    if run is not None:
        state = run.get("state", "?")
        if run.get("slurm_job") and state == "submitted":
            state = f"SLURM job {run['slurm_job']}: {_slurm_state(str(run['slurm_job']))}"
        stage = f", stage {run['stage']}" if run.get("stage") else ""
        lines.append(f"state: {state}{stage} (updated {_ago(run.get('updated'))}, on {run.get('host')} "
                     f"pid {run.get('pid')})")
        if run.get("error"):
            lines.append(f"error: {run['error']}")
    if progress is not None:
        epoch = f"{progress['epoch']}/{progress['max_epochs']}" if progress.get("max_epochs") else progress["epoch"]
        step = f"{progress['step']}/{progress['total_steps']}" if progress.get("total_steps") else progress["step"]
        losses = " ".join(f"{k} {v:.4f}" for k, v in (progress.get("losses") or {}).items())
        rates = f"{progress['utt_per_s']:.1f} utt/s"
        if progress.get("audio_s_per_s"):
            rates += f", {progress['audio_s_per_s']:.1f} audio-s/s"
        lines.append(f"progress: epoch {epoch} step {step} {losses} {rates}, {format_eta(progress.get('eta_s'))} "
                     f"({_ago(progress.get('time'))}, {progress.get('world_size')} workers)")
    live = (run or {}).get("state") == "running"  # an ended run's last pace is history, not news
    for rank, pace in sorted(((run or {}).get("ranks") or {}).items() if live else [], key=lambda item: int(item[0])):
        median = f"{pace['median_step_s']:.3f} s/step" if pace.get("median_step_s") else "warming up"
        if pace.get("busy_s") is not None:
            median += f" ({pace['busy_s']:.3f} s its own work)"
        if pace.get("data_wait_s") is not None:
            median += f", {pace['data_wait_s']:.3f} s waiting for data"
        if pace.get("gpu_mem_gib") is not None:
            util = f", {pace['gpu_util_pct']:.0f} % busy" if pace.get("gpu_util_pct") is not None else ""
            median += f", GPU {pace['gpu_mem_gib']:.2f} GiB peak{util}"
        lines.append(f"  rank {rank} on {pace['host']}: step {pace['step']}, {pace['phase']}, {median}, last "
                     f"progress {pace['idle_s']} s before the update")
    attempts = read_attempts(exp_dir)
    reports = read_reports(home)
    if attempts:
        story = history(attempts, reports)
        lines.append(f"attempts: {len(attempts)} (world sizes {', '.join(str(a.world_size) for a in attempts)}); "
                     f"preemptions: {len(story['preemptions'])}")
    if reports:
        last = reports[-1]
        lines.append(f"last checkpoint: {storage.join(home, last.name)} (epoch {last.metrics.get('epoch')}, step "
                     f"{last.metrics.get('step')})")
    if storage.exists(storage.join(home, "train_result.json")):
        lines.append(f"finished training: {storage.join(home, 'train_result.json')}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m espnet3.status", description=__doc__.splitlines()[0])
    parser.add_argument("exp_dir", help="the run's exp_dir (a local path or a bucket URI)")
    args = parser.parse_args(argv)
    try:
        print("\n".join(describe(args.exp_dir)))
    except FileNotFoundError as exc:
        print(f"espnet3.status: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
