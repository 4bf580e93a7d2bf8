"""Where a config's own Python code lives, and how it becomes importable here and on Ray workers.

A model ``_target_`` may name a class beside the config (``my_model.MyModel``) or, in an egs3
recipe, in the recipe's ``src/`` package (``src.my_model.MyModel``). The launcher puts that
directory on ``sys.path`` and ships the named packages to the workers of a remote cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig


def recipe_root(config_path: str | Path) -> Path | None:
    """The recipe directory of a ``<recipe>/conf/<role>.yaml`` (the one holding ``run.py``)."""
    conf = Path(config_path).resolve().parent
    return conf.parent if conf.name == "conf" and (conf.parent / "run.py").is_file() else None


def config_code_dir(config_path: str | Path) -> Path:
    """The directory whose Python code a config may name (``src.my_model.MyModel``).

    The launcher ships it to Ray workers (``runtime_env`` ``py_modules``/``working_dir``)
    so the same ``_target_`` resolves there. For an egs3 recipe's ``conf/<role>.yaml`` it is the
    recipe directory, whose ``src/`` the recipe's ``_target_`` entries name.
    """
    return recipe_root(config_path) or Path(config_path).resolve().parent


def recipe_code(cfg: DictConfig, config_dir: str | Path) -> list[Path]:
    """The recipe-local packages the config's ``_target_``s name (``src`` for ``src.my_model.M``):
    the model's, the callbacks' and the loggers'."""
    targets = [] if cfg.get("task") else [(cfg.get("model") or {}).get("_target_")]
    targets += [entry.get("_target_") for key in ("callbacks", "loggers") for entry in (cfg.get(key) or [])]
    tops = sorted({str(target).split(".")[0] for target in targets if target})
    return [Path(config_dir) / top for top in tops if (Path(config_dir) / top).is_dir()]


def make_importable(config_dir: str | Path) -> Path:
    """Put ``config_dir`` first on ``sys.path`` (once) and return it as an absolute path."""
    directory = Path(config_dir).resolve()
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    return directory
