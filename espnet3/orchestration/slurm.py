"""SLURM: one sbatch job that runs the launch over its allocation and requeues itself at walltime.

``--slurm partition=gpu,time=24:00:00,gpus_per_node=4`` writes ``exp_dir/slurm/espnet3.sbatch``,
checks what can be checked against the cluster (the partition, GPUs per node: ``sinfo``) and
submits it. The job asks SLURM for a warning before its time limit (``--signal=B:USR1@signal_s``);
the script turns that (and SLURM's own SIGTERM on preemption) into a SIGTERM to the launcher, which
has every rank checkpoint at its next step (the preemption mechanism of
:mod:`espnet3.orchestration.preemption`) and exits 143; the script then requeues the job
(``scontrol requeue``), at most ``max_requeues`` times, and the requeued job continues the same run
in ``exp_dir`` (``--resume`` is added once ``SLURM_RESTART_COUNT`` > 0). One node runs the launch
directly (it starts its own Ray); several start Ray on every node with ``ray symmetric-run``.
"""

from __future__ import annotations

import difflib
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

SLURM_DIR = "slurm"  # in exp_dir (a sweep's output_dir): the script and SLURM's output
SCRIPT = Path(SLURM_DIR) / "espnet3.sbatch"
REQUEUES_DIR = "requeues"
RAY_PORT = 6379


def output_file(exp_dir: str | Path, job: str = "%j") -> str:
    """Where SLURM writes the job's output (``%j``: sbatch's own placeholder for the job id)."""
    return f"{exp_dir}/{SLURM_DIR}/slurm-{job}.out"


@dataclass(frozen=True)
class SlurmSpec:
    """The ``--slurm`` options (sbatch's names, with ``_`` for ``-``).

    Attributes:
        partition, time, account, qos, mem: passed to sbatch as given.
        nodes: nodes of the allocation.
        gpus_per_node: GPUs on each node (``--num-gpus`` must fit in ``nodes x gpus_per_node``).
        cpus_per_node: CPUs the job asks for on each node (default: 1 + the workers' CPUs).
        signal_s: how long before the time limit SLURM warns the job (``--signal=B:USR1@signal_s``).
        max_requeues: how often the job requeues itself before it gives up.
    """

    partition: str | None = None
    time: str | None = None
    account: str | None = None
    qos: str | None = None
    mem: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_node: int | None = None
    signal_s: int = 120
    max_requeues: int = 10

    @classmethod
    def parse(cls, text: str) -> SlurmSpec:
        """``key=value,key=value``.

        Raises:
            ValueError: naming the option and the fix.
        """
        known = {f.name: f for f in fields(cls)}
        values: dict = {}
        for item in filter(None, (part.strip() for part in str(text).split(","))):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not value.strip():
                raise ValueError(f"--slurm takes key=value pairs separated by commas; got {item!r}.")
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]}?" if close else f"use one of {', '.join(known)}"
                raise ValueError(f"--slurm: unknown option {key!r}; {hint}")
            if known[key].type in ("int", "int | None"):
                if not value.strip().isdigit():
                    raise ValueError(f"--slurm {key}={value}: expected a whole number >= 0.")
                values[key] = int(value)
            else:
                values[key] = value.strip()
        spec = cls(**values)
        if spec.nodes < 1 or spec.signal_s < 1:
            raise ValueError("--slurm: nodes and signal_s must be >= 1.")
        return spec

    def check(self, num_gpus: int, cpus_per_node: int, partitions: dict[str, Partition] | None = None) -> None:
        """The request against the partition's nodes and limits (``sinfo``): a job no node can run
        would stay PENDING forever, looking like one that started.

        Raises:
            ValueError: naming the option, what the partition has and the fix.
        """
        if num_gpus > self.nodes * self.gpus_per_node:
            raise ValueError(
                f"--num-gpus {num_gpus} does not fit in --slurm nodes={self.nodes},gpus_per_node={self.gpus_per_node}: "
                f"raise nodes or gpus_per_node (or lower --num-gpus).")
        partitions = query_partitions() if partitions is None else partitions
        if self.partition is not None and self.partition not in partitions:
            raise ValueError(f"--slurm partition={self.partition}: sinfo lists no such partition; use one of "
                             f"{', '.join(sorted(partitions)) or '(none)'}.")
        name = self.partition or next((n for n, p in partitions.items() if p.default), None)
        if name is None:
            return
        partition, where = partitions[name], f"the nodes of partition {name}"
        if self.gpus_per_node > max((n.gpus for n in partition.nodes), default=0):
            raise ValueError(f"--slurm gpus_per_node={self.gpus_per_node}: {where} have at most "
                             f"{max((n.gpus for n in partition.nodes), default=0)} GPU(s); lower gpus_per_node or pick "
                             "another partition.")
        cpus = self.cpus_per_node or cpus_per_node
        most = max((n.cpus for n in partition.nodes), default=0)
        if cpus > most:
            asked = "cpus_per_node" if self.cpus_per_node else "the workers' CPUs on the busiest node + 1 for the driver"
            raise ValueError(f"the job asks for {cpus} CPUs per node ({asked}) and {where} have at most {most}: "
                             "lower --num-workers or --cpus-per-worker, spread over more nodes, or pick another "
                             "partition.")
        fitting = [n for n in partition.nodes if n.cpus >= cpus and n.gpus >= self.gpus_per_node]
        if self.nodes > len(fitting):
            raise ValueError(f"--slurm nodes={self.nodes}: partition {name} has {len(fitting)} node(s) with {cpus} "
                             f"CPUs{f' and {self.gpus_per_node} GPUs' if self.gpus_per_node else ''}; lower nodes or "
                             "pick another partition.")
        if self.mem is not None and _megabytes(self.mem) > max(n.memory_mb for n in fitting):
            raise ValueError(f"--slurm mem={self.mem}: {where} have at most {max(n.memory_mb for n in fitting)} MB; "
                             "lower mem or pick another partition.")
        if self.time is not None and partition.max_time_s is not None and _seconds(self.time) > partition.max_time_s:
            raise ValueError(f"--slurm time={self.time}: partition {name} allows at most {partition.time_limit}; "
                             "lower time (the job requeues itself at its limit) or pick another partition.")

    def script(self, launch_argv: list[str], exp_dir: str, job_name: str, cpus_per_node: int,
               python: str = sys.executable) -> str:
        """The sbatch script: its options, then Ray and the launch, the signal relay and the requeue."""
        out = output_file(exp_dir)
        options = [f"--job-name={job_name}", f"--nodes={self.nodes}", "--ntasks-per-node=1",
                   f"--cpus-per-task={self.cpus_per_node or cpus_per_node}", f"--output={out}", "--open-mode=append",
                   "--requeue", f"--signal=B:USR1@{self.signal_s}"]
        options += [f"--{key}={value}" for key, value in
                    (("partition", self.partition), ("time", self.time), ("account", self.account),
                     ("qos", self.qos), ("mem", self.mem)) if value]
        if self.gpus_per_node:
            options.append(f"--gpus-per-node={self.gpus_per_node}")
        launch = " ".join(shlex.quote(a) for a in [python, "-m", "espnet3.launch", *launch_argv])
        lines = ["#!/bin/bash", "# Written by python -m espnet3.launch when it submitted this job to SLURM.",
                 *(f"#SBATCH {o}" for o in options), "", f"cd {shlex.quote(str(Path.cwd()))}",
                 "resume=()", '[ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && resume=(--resume)',
                 f"launch=({launch} \"${{resume[@]}}\")"]
        if self.nodes > 1:
            lines += ['head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                      f'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 {shlex.quote(str(Path(python).parent / "ray"))} '
                      f'symmetric-run --address "$head:{RAY_PORT}" --min-nodes "$SLURM_NNODES" -- "${{launch[@]}}" &']
        else:
            lines += ['"${launch[@]}" &']
        lines += [
            "pid=$!",
            "# SLURM's walltime warning (USR1) and its preemption (TERM): the launcher checkpoints every",
            "# rank at the next step and exits 143.",
            "trap 'kill -TERM $pid' USR1 TERM",
            "wait $pid; rc=$?",
            "while kill -0 $pid 2>/dev/null; do wait $pid; rc=$?; done  # wait returns early on a trapped signal",
            f'if [ "$rc" -eq 143 ] && [ "${{SLURM_RESTART_COUNT:-0}}" -lt {self.max_requeues} ]; then',
            '  echo "[espnet3] requeueing SLURM job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0})"',
            '  scontrol requeue "$SLURM_JOB_ID"',
            "fi",
            "exit $rc",
            "",
        ]
        return "\n".join(lines)


def record_requeue(exp_dir: str | Path) -> None:
    """In a requeued job (``SLURM_RESTART_COUNT`` > 0): ``exp_dir/requeues/requeue-<n>.json``."""
    import os
    import time

    from espnet3.storage import atomic_write_json

    restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if restart > 0:
        atomic_write_json(Path(exp_dir) / REQUEUES_DIR / f"requeue-{restart}.json",
                          {"time": time.time(), "job_id": os.environ.get("SLURM_JOB_ID"), "restart_count": restart})


def read_requeues(exp_dir: str | Path) -> list[dict]:
    """What ``train_result.json`` lists under ``requeues``."""
    from espnet3 import storage

    records = storage.read_json_files(storage.home(Path(exp_dir) / REQUEUES_DIR), "requeue-")
    return sorted(records, key=lambda r: r["restart_count"])


def without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE`` (what the job runs instead of submitting again)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


@dataclass(frozen=True)
class Node:
    """One node as ``sinfo`` lists it: GPUs, CPUs and memory (MB)."""

    gpus: int
    cpus: int
    memory_mb: int


@dataclass(frozen=True)
class Partition:
    """A partition's nodes and time limit (``sinfo``'s ``%l``: ``1-00:00:00``, ``infinite``)."""

    nodes: tuple[Node, ...]
    time_limit: str = "infinite"
    default: bool = False

    @property
    def max_time_s(self) -> int | None:
        return None if self.time_limit in ("infinite", "UNLIMITED", "n/a") else _seconds(self.time_limit)


def query_partitions() -> dict[str, Partition]:
    """Every partition with its nodes and time limit (``sinfo``). Raises ValueError where there is no SLURM."""
    if shutil.which("sinfo") is None:
        raise ValueError("--slurm: `sinfo` is not on PATH; run the launch on a SLURM login node.")
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%G|%c|%m|%l"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise ValueError(f"--slurm: sinfo failed ({proc.stderr.strip() or proc.returncode}); is slurmctld reachable?")
    nodes: dict[str, list[Node]] = {}
    limits: dict[str, str] = {}
    default = None
    for line in proc.stdout.splitlines():
        name, gres, cpus, memory, limit = (line.split("|") + [""] * 5)[:5]
        if name.endswith("*"):
            name = default = name.rstrip("*")
        nodes.setdefault(name, []).append(Node(_gpus(gres), _number(cpus), _number(memory)))
        limits[name] = limit.strip() or "infinite"
    return {name: Partition(tuple(found), limits[name], name == default) for name, found in nodes.items()}


def _number(text: str) -> int:
    digits = "".join(c for c in text.strip().rstrip("+") if c.isdigit())
    return int(digits) if digits else 0


def _megabytes(mem: str) -> int:
    """sbatch's ``--mem`` (``16G``, ``16000M``, ``16000``: MB) in MB."""
    text = mem.strip().upper()
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}.get(text[-1:], None)
    value = text[:-1] if scale is not None else text
    if not value.replace(".", "", 1).isdigit():
        raise ValueError(f"--slurm mem={mem}: expected sbatch's form, e.g. 16G or 16000M.")
    return int(float(value) * (scale or 1))


def _seconds(limit: str) -> int:
    """A SLURM time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) in seconds."""
    days, _, clock = limit.strip().rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def _gpus(gres: str) -> int:
    """GPUs in a ``sinfo %G`` field (``gpu:4``, ``gpu:a100:8(S:0-1)``, ``(null)``)."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def submit(script: Path) -> str:
    """``sbatch`` the script; returns the job id."""
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ValueError(f"--slurm: sbatch refused the job: {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]
