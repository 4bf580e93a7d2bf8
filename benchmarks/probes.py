"""Timing probes shared by both sides of every comparison: the same callback on the same hooks.

``StepTimer`` is a Lightning callback: it records when each training batch starts and ends,
how many utterances and padded samples it held, the process's peak RSS, and wall-clock marks
(``time.time()``, comparable across the processes of one machine). Every rank writes
``rank<r>.json`` into the output directory at the end of fit.

``bench_train_loop`` wraps espnet3's own ``train_loop_per_worker`` (the product path, unchanged):
it only adds the timer to the Lightning Trainer espnet3 builds and times the worker's phases.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

CONSENSUS_MODES = ("on", "off", "alternate")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class StepTimer(L.Callback):
    """Per-step timings of one rank.

    Args:
        out_dir: where ``rank<r>.json`` goes.
        consensus: for espnet3's module only: ``on`` (product default), ``off``
            (``nan_guard.consensus = False``) or ``alternate`` (on for even steps, off for odd ones,
            decided from the step index so every rank agrees without communicating).
        marks: wall-clock marks taken before fit (process start, imports, ...), copied into the file.
        collective_calls: after fit, time this many NaN-consensus all_reduces (0: skip).
    """

    def __init__(self, out_dir: str, consensus: str = "on", marks: dict | None = None, collective_calls: int = 0):
        if consensus not in CONSENSUS_MODES:
            raise ValueError(f"consensus must be one of {CONSENSUS_MODES}; got {consensus!r}")
        self.out_dir = Path(out_dir)
        self.consensus = consensus
        self.marks = marks if marks is not None else {}  # shared: marks taken later still land here
        self.collective_calls = collective_calls
        self.steps: list[dict[str, Any]] = []
        self._start = 0.0

    def _set_consensus(self, pl_module, index: int) -> bool | None:
        guard = getattr(pl_module, "nan_guard", None)
        if guard is None:
            return None
        guard.consensus = self.consensus == "on" or (self.consensus == "alternate" and index % 2 == 0)
        return guard.consensus

    def on_fit_start(self, trainer, pl_module) -> None:
        self.marks["fit_start"] = time.time()

    def on_train_start(self, trainer, pl_module) -> None:
        self.marks["train_start"] = time.time()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._consensus_now = self._set_consensus(pl_module, len(self.steps))
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        end = time.perf_counter()
        ids, tensors = batch
        self.steps.append({
            "start": self._start,
            "end": end,
            "utts": len(ids),
            "padded": int(tensors["speech"].numel()),
            "real": int(tensors["speech_lengths"].sum()),
            "consensus": self._consensus_now,
        })
        if len(self.steps) == 1:
            self.marks["first_step_end"] = time.time()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.marks["fit_end"] = time.time()
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "threads": torch.get_num_threads(),
            "peak_rss_mb": peak_rss_mb(),
            "marks": self.marks,
            "steps": self.steps,
        }
        if self.collective_calls and trainer.world_size > 1:
            record["collective_us"] = time_collective(self.collective_calls)
        notice = getattr(getattr(pl_module, "nan_guard", None), "notice", None)
        if self.collective_calls and notice is not None:
            record["notice_read_us"] = time_notice(notice, 20 * self.collective_calls)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record))


def time_collective(calls: int) -> float:
    """Microseconds per NaN-consensus decision (one all_reduce(MAX) + .item()), median of 5 rounds."""
    import torch.distributed as dist

    from espnet3.components.modeling.nan_guard import any_rank_true

    flag = torch.tensor(False)
    rounds = []
    for _ in range(5):
        dist.barrier()
        start = time.perf_counter()
        for _ in range(calls):
            any_rank_true(flag)
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return sorted(rounds)[len(rounds) // 2]


def time_notice(notice, calls: int) -> float:
    """Microseconds per read of the local preemption notice (what each step adds to the consensus)."""
    start = time.perf_counter()
    for _ in range(calls):
        notice()
    return (time.perf_counter() - start) / calls * 1e6


def bench_train_loop(loop_config: dict[str, Any]) -> None:
    """espnet3's ``train_loop_per_worker`` plus a StepTimer and phase marks (runs in each Ray worker)."""
    marks = {"worker_enter": time.time()}
    bench = loop_config.pop("bench")
    import lightning
    import ray.train  # noqa: F401
    import ray.train.lightning  # noqa: F401

    import espnet3.components.modeling.lightning_module  # noqa: F401
    import espnet3.data.loader  # noqa: F401
    import espnet3.orchestration.worker as worker
    import espnet3.utils.task_utils as task_utils

    marks["worker_imports_done"] = time.time()
    build_model = task_utils.build_model

    def timed_build_model(*args, **kwargs):
        marks["model_build_start"] = time.time()
        model = build_model(*args, **kwargs)
        marks["model_build_end"] = time.time()
        return model

    timer = StepTimer(bench["out_dir"], bench["consensus"], marks, bench.get("collective_calls", 0))
    trainer_cls = lightning.Trainer

    class TimedTrainer(trainer_cls):
        def __init__(self, *args, callbacks=None, **kwargs):
            marks["trainer_init"] = time.time()
            super().__init__(*args, callbacks=[*(callbacks or []), timer], **kwargs)

    task_utils.build_model, lightning.Trainer = timed_build_model, TimedTrainer
    try:
        worker.train_loop_per_worker(loop_config)
    finally:
        task_utils.build_model, lightning.Trainer = build_model, trainer_cls
