"""Write files so that a crash never leaves half of one behind (temp file + rename)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _temp_beside(path: Path) -> Path:
    # Same directory, so the rename is atomic (one filesystem); pid-unique, so concurrent
    # writers never share a temp file.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_json(path: str | os.PathLike, value: Any) -> Path:
    return atomic_write(path, json.dumps(value, indent=2) + "\n")


def atomic_save(path: str | os.PathLike, save: Callable[[Path], None]) -> Path:
    """Let ``save(tmp_path)`` write a file (torch.save, np.savez, ...), then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    try:
        save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
