"""Hydra-style command-line overrides (``a.b=v``, ``+a.b=v``, ``++a.b=v``, ``~a.b``).

Hydra's own parser is used so values mean what they mean on any Hydra command line
(``x=[1,2]`` is a list, ``x=null`` is None, ``x=${a.b}`` an interpolation). Hydra's
rules are kept too: changing a key that does not exist is a typo until proven
otherwise, so it needs ``+``; ``+`` on an existing key would silently change a value the
user believed they were adding, so it is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf

from espnet3.errors import ConfigError


def has_key(cfg: DictConfig, dotted: str) -> bool:
    """Whether ``dotted`` names an entry in ``cfg``, even one set to ``???`` or null."""
    node: Any = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def apply_overrides(
    cfg: DictConfig,
    overrides: Iterable[str],
    source: str | Path | None = None,
    known: DictConfig | None = None,
) -> None:
    """Apply ``overrides`` to ``cfg`` in place (callers pass their own copy).

    ``known`` is the config whose keys count as existing (default: ``cfg``); the
    ESPnet2 converter passes the defaults merged with its output, so that overriding a
    default it did not write still needs no ``+``, as in :func:`load_config`.
    """
    overrides = list(overrides)
    if not overrides:
        return
    parser = OverridesParser.create()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except OverrideParseException as exc:
            raise ConfigError(
                text,
                source,
                f"cannot parse override ({exc})",
                "write overrides as key.path=value, +new.key=value or ~key.path",
            ) from None
        key = override.key_or_group
        if override.is_sweep_override():
            raise ConfigError(
                key,
                source,
                f"`{text}` is a sweep; one run takes one value",
                "give a single value, or use the tuning stage for sweeps",
            )
        in_cfg = has_key(cfg, key)
        exists = in_cfg or (known is not None and has_key(known, key))
        if override.is_delete():
            if not in_cfg:
                raise ConfigError(
                    key, source, f"`{text}` deletes a key that is not set", "drop the override"
                )
            _delete(cfg, key)
            continue
        if override.is_add() and exists:
            raise ConfigError(
                key,
                source,
                f"`{text}` adds a key that already exists",
                f"change it with `{text.lstrip('+')}`",
            )
        if not override.is_add() and not override.is_force_add() and not exists:
            raise ConfigError(
                key,
                source,
                f"`{text}` changes a key that does not exist (a typo?)",
                f"add it with `+{text}`",
            )
        value = override.value()
        # A new `_target_` block replaces the old one: merging would hand the old class's
        # keyword arguments to the new class.
        merge = not (isinstance(value, Mapping) and "_target_" in value)
        OmegaConf.update(cfg, key, value, merge=merge, force_add=True)


def _delete(cfg: DictConfig, dotted: str) -> None:
    parent_key, _, leaf = dotted.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if isinstance(parent, ListConfig):
        del parent[int(leaf)]
    else:
        del parent[leaf]
