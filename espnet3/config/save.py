"""Write the resolved config next to a run, without the secrets that may sit in it.

The saved file ends up in experiment directories that get copied, shared and uploaded
(W&B stores it too), so credentials are redacted by key name and by value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

REDACTED = "***"

# `token_list`/`token_type` are ESPnet vocabulary settings, not credentials: only a key
# that *ends* in "token" (hf_token, auth_token) counts as one.
_SECRET_KEY = re.compile(
    r"(api[_-]?key|access[_-]?key|password|passwd|secret|credential|(^|[_-])token$)",
    re.IGNORECASE,
)


def is_secret_key(name: str) -> bool:
    """Whether a config key's name says its value is a credential."""
    return _SECRET_KEY.search(name) is not None


def redact(value: Any) -> Any:
    """Return ``value`` (a plain container) with credentials replaced by ``"***"``."""
    return _redact(value, "", os.environ.get("WANDB_API_KEY") or None)


def _redact(value: Any, key: str, wandb_key: str | None) -> Any:
    if key and is_secret_key(key) and value is not None:
        return REDACTED
    if isinstance(value, dict):
        return {k: _redact(v, str(k), wandb_key) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, "", wandb_key) for v in value]
    if wandb_key and isinstance(value, str) and wandb_key in value:
        return REDACTED
    return value


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    """Write ``cfg`` with interpolations resolved and secrets redacted; returns ``path``.

    Resolves a copy: resolving the caller's config in place would freeze values such as
    ``exp_dir`` that a later stage still overrides.
    """
    from espnet3.storage import atomic_write

    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.resolve(copy)
    plain = _homes(redact(OmegaConf.to_container(copy, resolve=True)))
    return atomic_write(path, OmegaConf.to_yaml(OmegaConf.create(plain)))


def _homes(value: Any) -> Any:
    """``value`` with every local copy of a URI written as the URI (:func:`espnet3.storage.home`):
    the saved config names where the run lives, not one machine's cache."""
    from espnet3.storage import home

    if isinstance(value, dict):
        return {k: _homes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_homes(v) for v in value]
    return home(value) if isinstance(value, str) and value.startswith("/") else value
