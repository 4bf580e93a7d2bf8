"""The benchmark harness: sizes, the side-by-side runner, per-rank records and a Ray head of its own.

Each comparison (:mod:`benchmarks.comparisons`) starts fresh processes for its sides and alternates
them (A, B, A, B, ...) so that background load hits both alike.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.fixture import REPO

RESULTS_DIR = REPO / "benchmarks" / "results"
# Ray's temp dir, separate from /tmp/ray: ray.init() without an address joins "the running local
# cluster" it finds there, which on a shared machine may be somebody else's.
RAY_TMPDIR = "/tmp/e3bench"


@dataclass(frozen=True)
class Size:
    model: str
    num_train: int
    batch_bins: int
    warmup: int  # steps excluded from throughput
    measure: int  # steps measured
    reps: int  # alternations per comparison
    batching_batches: int
    collective_calls: int
    sweep_samples: int


SIZES = {
    "tiny": Size("tiny", 40, 200_000, 1, 3, 1, 3, 20, 2),
    "quick": Size("conformer", 300, 480_000, 2, 8, 1, 6, 100, 0),  # < 10 min on a slow 2-core box: no sweep
    "full": Size("conformer", 1000, 480_000, 5, 40, 3, 20, 300, 8),
    # One GPU, the default job's GPU batch (dataloader.gpu: 64 utterances of ~30,000 samples).
    "gpu": Size("conformer", 1000, 1_920_000, 5, 40, 2, 6, 100, 4),
}


def bench_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RAY_TMPDIR=RAY_TMPDIR)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("RAY_ADDRESS", None)
    return env


def run_logged(cmd: list[str], log: Path, env: dict | None = None, cwd: Path = REPO, timeout: float = 1800) -> tuple[int, float]:
    """Run ``cmd`` with output to ``log``; return (exit code, wall-clock start)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        start = time.time()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or bench_env(), cwd=cwd, timeout=timeout)
    return proc.returncode, start


def load_ranks(out_dir: Path) -> list[dict]:
    ranks = [json.loads(p.read_text()) for p in sorted(out_dir.glob("rank*.json"))]
    if not ranks:
        raise RuntimeError(f"no rank*.json in {out_dir}: the run failed (see the .log beside it)")
    return sorted(ranks, key=lambda r: r["rank"])


def throughput(ranks: list[dict], warmup: int) -> float:
    """Utterances per second over all ranks, from the end of step ``warmup`` to the last step's end."""
    steps0 = ranks[0]["steps"]
    if len(steps0) <= warmup:
        raise RuntimeError(f"only {len(steps0)} steps recorded; need more than the {warmup} warm-up steps")
    elapsed = steps0[-1]["end"] - steps0[warmup - 1]["end"] if warmup else steps0[-1]["end"] - steps0[0]["start"]
    utts = sum(s["utts"] for r in ranks for s in r["steps"][warmup:])
    return utts / elapsed


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b else None


class Bench:
    def __init__(self, size: Size, work: Path, data: Path, upstream_python: str | None):
        from benchmarks.fixture import load_bench_config, make_fixture

        self.size, self.work, self.upstream_python = size, work, upstream_python
        self.fixture = make_fixture(work, data, size.model, size.num_train, size.batch_bins)
        self.cfg = load_bench_config(self.fixture.config, [f"exp_dir={work / 'unused'}"])
        self.runs = 0
        self._plans: dict[tuple[int, int], Path] = {}
        self._cache: dict[tuple, dict] = {}

    def run_dir(self, tag: str) -> Path:
        self.runs += 1
        path = self.work / "runs" / f"{self.runs:03d}_{tag}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    def plan(self, world_size: int, steps: int) -> Path:
        from benchmarks.plan import make_plan

        key = (world_size, steps)
        if key not in self._plans:
            self._plans[key] = make_plan(self.cfg, world_size, steps, self.work / f"plan_{world_size}x{steps}.json")
        return self._plans[key]

    # ------------------------------------------------------------------ sides
    def espnet3(self, workers: int, consensus: str = "on", steps: int | None = None, address: str | None = None,
                gpus: int = 0, bucket: str | None = None, overrides: tuple[str, ...] = ()) -> dict:
        """One espnet3 run; ``bucket``: its exp_dir in that bucket of :meth:`s3` instead of on disk."""
        steps = steps or self.size.warmup + self.size.measure
        run = self.run_dir(f"espnet3_{workers}w_{consensus}" + (f"_{gpus}gpu" if gpus else "") + ("_s3" if bucket else ""))
        exp_dir = f"s3://{bucket}/{run.name}/exp" if bucket else str(run / "exp")
        cmd = [sys.executable, "-m", "benchmarks.espnet3_side", "--config", str(self.fixture.config),
               "--exp-dir", exp_dir, "--out", str(run / "out"), "--num-workers", str(workers),
               "--num-gpus", str(gpus),
               "--max-steps", str(steps), "--consensus", consensus,
               "--collective-calls", str(self.size.collective_calls if consensus != "on" else 0),
               *(f"--override={o}" for o in overrides)]
        env = bench_env()
        if bucket:
            env.update(self.s3()["env"], ESPNET3_STORAGE_CACHE=str(run / "storage-cache"))
        if address:
            cmd += ["--address", address]
            env["RAY_AUTH_MODE"] = "token"  # `ray start` clusters use token auth; clients must opt in
        t0 = time.time()
        code, _ = run_logged([*cmd, "--t0", str(t0)], run / "run.log", env=env)
        if code:
            raise RuntimeError(f"espnet3 run failed with exit code {code}; see {run / 'run.log'}")
        return {"ranks": load_ranks(run / "out"), "driver": json.loads((run / "out" / "driver.json").read_text())}

    def plain(self, devices: int, steps: int | None = None, python: str | None = None, module: str = "plain",
              accelerator: str = "cpu", toy: bool = False) -> dict:
        steps = steps or self.size.warmup + self.size.measure
        run = self.run_dir(f"{module}_ddp_{devices}_{accelerator}" + ("_toy" if toy else ""))
        plan = self.plan(devices, steps)
        cwd, env = REPO, bench_env()
        if python:  # another environment: make only benchmarks/ importable, never this repo's espnet3
            cwd = run / "src"
            (cwd / "benchmarks").mkdir(parents=True)
            for name in ("__init__.py", "probes.py", "plain_ddp.py"):
                shutil.copy(REPO / "benchmarks" / name, cwd / "benchmarks" / name)
            env["PYTHONPATH"] = str(cwd)
        cmd = [python or sys.executable, "-m", "benchmarks.plain_ddp", "--plan", str(plan), "--out", str(run / "out"),
               "--devices", str(devices), "--accelerator", accelerator, "--module", module, "--t0", str(time.time()),
               *(["--toy-model"] if toy else [])]
        code, _ = run_logged(cmd, run / "run.log", env=env, cwd=cwd)
        if code:
            raise RuntimeError(f"plain DDP run failed with exit code {code}; see {run / 'run.log'}")
        return {"ranks": load_ranks(run / "out")}

    def s3(self) -> dict:
        """A local S3 server (moto, 127.0.0.1) with one bucket, started once; its client environment."""
        if "s3" not in self._cache:
            from benchmarks import s3_server

            self.work.mkdir(parents=True, exist_ok=True)
            proc, endpoint = s3_server.start(self.work / "s3_server.log")
            atexit.register(s3_server.stop, proc)
            bucket = f"bench-{os.getpid()}"
            s3_server.client(endpoint).create_bucket(Bucket=bucket)
            self._cache["s3"] = {"endpoint": endpoint, "bucket": bucket, "proc": proc,
                                 "env": {**s3_server.CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}}
        return self._cache["s3"]

    def launch_first_step(self, address: str | None = None) -> dict:
        """``python -m espnet3.launch`` for one step; the first step's time is its first TensorBoard event."""
        run = self.run_dir("launch" + ("_cluster" if address else "_local"))
        cmd = [sys.executable, "-m", "espnet3.launch", "--config", str(self.fixture.config), "--num-gpus", "0",
               *(["--address", address] if address else []),
               f"exp_dir={run / 'exp'}", "trainer.max_steps=1", "trainer.limit_val_batches=1",
               "report_every_n_steps=1", "trainer.log_every_n_steps=1",
               "--stages", "train"]  # last: --stages takes every word after it
        env = dict(bench_env(), **({"RAY_AUTH_MODE": "token"} if address else {}))
        code, start = run_logged(cmd, run / "run.log", env=env)
        end = time.time()
        first = first_event_time(run / "exp" / "tensorboard")
        if first is None:
            raise RuntimeError(f"espnet3.launch logged no training step (exit code {code}); see {run / 'run.log'}")
        return {"first_step_s": first - start, "process_s": end - start, "exit_code": code}


def first_event_time(tb_dir: Path) -> float | None:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    times = []
    for path in glob.glob(str(tb_dir / "**" / "events.out.tfevents.*"), recursive=True):
        for event in EventFileLoader(path).Load():
            if any(v.tag.startswith("train/") for v in event.summary.value):
                times.append(event.wall_time)
    return min(times) if times else None


def breakdown(record: dict) -> dict[str, float]:
    """Seconds per phase from process start to the end of the first step."""
    m = {**record.get("driver", {}).get("marks", {}), **record["ranks"][0]["marks"]}
    phases = [
        ("driver imports", "process_start", "driver_imports_done"),
        ("config + data check", "driver_imports_done", "preflight_done"),
        ("ray.init", "preflight_done", "ray_init_done"),
        ("driver model build (check)", "ray_init_done", "driver_model_built"),
        ("TorchTrainer build", "driver_model_built", "fit_called"),
        ("worker group start", "fit_called", "worker_enter"),
        ("worker imports", "worker_enter", "worker_imports_done"),
        ("imports", "process_start", "imports_done"),
        ("model build", "model_build_start", "model_build_end"),
        ("loaders + Trainer", "model_build_end", "trainer_init"),
        ("fit setup (DDP, other ranks)", "trainer_init", "train_start"),
        ("first step", "train_start", "first_step_end"),
    ]
    out = {name: m[b] - m[a] for name, a, b in phases if a in m and b in m}
    out["total"] = m["first_step_end"] - m["process_start"]
    return {k: round(v, 2) for k, v in out.items()}


class RayHead:
    """``ray start --head --block`` in a subprocess; terminating it stops the cluster it started."""

    def __init__(self, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        ray_bin = str(Path(sys.executable).parent / "ray")
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "w")
        self.proc = subprocess.Popen(
            [ray_bin, "start", "--head", "--port", str(self.port), "--num-cpus", "4", "--block",
             "--include-dashboard", "false", "--disable-usage-stats"],
            stdout=self._log, stderr=subprocess.STDOUT, env=bench_env(), start_new_session=True)
        atexit.register(self.stop)  # also on an exit that skips the caller's `finally` (see main)

    def wait(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}; see {self._log.name}")
            if "Ray runtime started" in Path(self._log.name).read_text():
                return
            time.sleep(0.5)
        raise TimeoutError(f"ray start did not come up in {timeout} s; see {self._log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # `ray start --block` stops its cluster on SIGTERM
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever of the cluster is left (its own session: nothing else is in the group)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()
