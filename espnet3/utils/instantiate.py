"""``_target_`` blocks -> objects, with espnet2 targets imported offline-safely first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from espnet3.utils.espnet2_imports import import_espnet2


def import_dotted(path: str) -> Any:
    """The object a dotted path names (``pkg.module.Class``), espnet2 modules imported offline-safely."""
    import importlib

    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{path!r} is not a dotted path such as pkg.module.Class")
    module = import_espnet2(module_name) if module_name.startswith(("espnet2.", "espnet.")) else (
        importlib.import_module(module_name)
    )
    try:
        return getattr(module, name)
    except AttributeError:
        raise ValueError(f"module {module_name} has no attribute {name!r} (from {path!r})") from None


def instantiate(block: Mapping[str, Any], **kwargs: Any) -> Any:
    import hydra.utils

    target = block.get("_target_", "")
    if target.startswith(("espnet2.", "espnet.")):
        import_espnet2(target.rsplit(".", 1)[0])
    return hydra.utils.instantiate(dict(block), **kwargs)
