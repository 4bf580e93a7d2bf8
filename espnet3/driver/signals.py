"""SIGTERM in the launching process, and the exit codes the launcher returns.

A scheduler's preemption, SLURM's walltime warning and ``timeout`` all send SIGTERM. During
training the first one asks every rank to checkpoint at its next step (the preemption board);
otherwise, or a second time, it stops at once. Either way what was saved stays, and
``--resume`` continues.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, ``timeout``): stop, keep what is saved, exit quietly.

    A KeyboardInterrupt: no ``except Exception`` on the way up swallows it, and Ray's blocking calls
    (``ray.get`` of the Train controller, where the driver waits) let only KeyboardInterrupt and
    SystemExit out of a signal handler, turning any other exception into a SystemError. Ray raises
    its own KeyboardInterrupt there, so which signal it was is kept in :data:`SIGTERM_RECEIVED`.
    """


SIGTERM_RECEIVED = threading.Event()
# How long a SIGTERM during training waits for every rank to checkpoint before stopping anyway.
STOP_GRACE_S = 120.0


def _terminate(signum, frame) -> None:
    from espnet3.orchestration.preemption import armed

    board = armed()
    if board is not None and not SIGTERM_RECEIVED.is_set():
        SIGTERM_RECEIVED.set()
        board.ask.remote("SIGTERM")
        print(f"[espnet3] SIGTERM: every rank checkpoints at its next step, then the run stops (within "
              f"{STOP_GRACE_S:.0f} s; another SIGTERM stops at once)", file=sys.stderr, flush=True)
        timer = threading.Timer(STOP_GRACE_S, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()
        return
    SIGTERM_RECEIVED.set()
    raise Terminated()


def stop_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` (again after ``ray.init``, whose core worker installs
    a C++ handler that dumps stack traces)."""
    signal.signal(signal.SIGTERM, _terminate)
