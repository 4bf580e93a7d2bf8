"""``_target_`` blocks -> objects, with espnet2 targets imported offline-safely first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from espnet3.utils.espnet2_imports import import_espnet2


def instantiate(block: Mapping[str, Any], **kwargs: Any) -> Any:
    import hydra.utils

    target = block.get("_target_", "")
    if target.startswith(("espnet2.", "espnet.")):
        import_espnet2(target.rsplit(".", 1)[0])
    return hydra.utils.instantiate(dict(block), **kwargs)
