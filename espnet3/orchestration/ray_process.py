"""Entering espnet3's code in a Ray process: a Train worker, an inference actor, a Ray task.

Ray starts these processes elsewhere than the launcher: in another directory, maybe on another
node, with the libraries' start-up chatter on, without the launcher's object-storage settings.
:func:`ray_process` makes each of them see what the launcher sees, and keeps what it prints in
its own log file (uploaded while it runs when the run lives in a bucket) instead of Ray's
forwarding it to the driver's console.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from espnet3 import storage
from espnet3.orchestration.cluster import enter_launch_dir
from espnet3.orchestration.worker_logs import output_to
from espnet3.utils.quiet import silence_library_noise


@contextmanager
def ray_process(storage_env: Mapping[str, str] | None = None, log_file: Path | None = None,
                uploads: Sequence[Path] = ()) -> Iterator[None]:
    """Libraries quiet, relative paths meaning what they mean to the launcher (the recipe's files,
    :func:`~espnet3.orchestration.cluster.enter_launch_dir`), object storage reached with the
    launcher's settings (``storage_env``, :func:`espnet3.storage.worker_env`); inside the block,
    stdout and stderr go to ``log_file``, which (with ``uploads``) reaches the bucket while the
    block runs and after it ends."""
    silence_library_noise()
    enter_launch_dir()
    storage.use_env(storage_env)
    if log_file is None:
        yield
        return
    with storage.uploading([log_file, *uploads]), output_to(log_file):
        yield
