"""Run a function in N real processes joined by a gloo process group, as Lightning DDP ranks.

Each process gets the torchelastic-style environment (MASTER_ADDR/PORT, RANK,
LOCAL_RANK, WORLD_SIZE), so Lightning's DDP strategy treats it as externally
launched. The parent enforces a timeout: a hang is a test failure, not a stuck CI.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import socket
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(fn: Callable, rank: int, world_size: int, port: int, out_dir: str, kwargs: dict) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
        WORLD_SIZE=str(world_size),
        OMP_NUM_THREADS="1",
    )
    import torch

    torch.set_num_threads(1)
    try:
        result: Any = {"ok": fn(rank, world_size, Path(out_dir), **kwargs)}
    except BaseException as exc:  # noqa: BLE001 - reported to the parent verbatim
        result = {"error": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
    with open(Path(out_dir) / f"rank{rank}.pkl", "wb") as fh:
        pickle.dump(result, fh)


def run_ddp(fn: Callable, out_dir: Path, world_size: int = 2, timeout: float = 180, **kwargs: Any) -> list[dict]:
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [
        ctx.Process(target=_entry, args=(fn, rank, world_size, port, str(out_dir), kwargs))
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout)
    hung = [rank for rank, proc in enumerate(procs) if proc.is_alive()]
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    if hung:
        raise AssertionError(f"ranks {hung} did not finish within {timeout}s (deadlock?)")
    results = []
    for rank in range(world_size):
        path = Path(out_dir) / f"rank{rank}.pkl"
        if not path.exists():
            raise AssertionError(f"rank {rank} died without a result (exit code {procs[rank].exitcode})")
        results.append(pickle.loads(path.read_bytes()))
    return results
