"""Load a train.yaml (or an egs3 recipe's training config): merge over the package defaults, apply
overrides, validate.

Everything that can be wrong with a config is reported here, in the launching process,
before Ray starts a worker that would fail minutes later in a log nobody reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from espnet3.errors import ConfigError
from espnet3.config.overrides import apply_overrides
from espnet3.config.save import save_config
from espnet3.config.schema import check_block_shapes, check_top_level_keys, validate

__all__ = ["DEFAULTS_PATH", "load_config", "load_defaults", "merge_with_defaults", "save_config"]

DEFAULTS_PATH = Path(str(files("espnet3.config") / "defaults.yaml"))

# Blocks a user's file replaces whole instead of merging into the default: merging a
# user's `scheduler: {_target_: ReduceLROnPlateau}` into the default WarmupLR block would
# hand `warmup_steps` to ReduceLROnPlateau.
REPLACED_BLOCKS = ("model", "optimizer", "scheduler", "optimizers", "schedulers")


def load_defaults() -> DictConfig:
    """The package defaults (docs/train_yaml.md), a fresh copy on every call."""
    return OmegaConf.load(DEFAULTS_PATH)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load ``path``, merge it over the defaults, apply Hydra-style ``overrides``, validate.

    Returns the merged config with interpolations left in place, so that a later change
    (``exp_dir=...``) still flows into the keys derived from it.

    Raises:
        ConfigError: naming the key, the file and the fix.
        FileNotFoundError: when ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"train config {path} does not exist")
    user = _load_user_file(path)
    from espnet3.recipe.roles import is_recipe_config, recipe_train_yaml

    if is_recipe_config(path, user):  # an egs3 recipe's conf/training.yaml: the train.yaml it amounts to
        user = OmegaConf.create(recipe_train_yaml(path))
    cfg = merge_with_defaults(user, path)
    apply_overrides(cfg, overrides, path)
    validate(cfg, path)
    return cfg


def merge_with_defaults(user: DictConfig, path: Path) -> DictConfig:
    """Merge a user's config over the defaults, as :func:`load_config` does (no overrides,
    no validation beyond top-level keys and block shapes)."""
    defaults = load_defaults()
    check_top_level_keys(user, list(defaults.keys()), path)
    check_block_shapes(user, path)
    for key in REPLACED_BLOCKS:
        if key in user:
            defaults[key] = None
    if user.get("optimizers") is not None:
        # The multi-optimizer path replaces the single-optimizer defaults; a user who
        # writes both still gets the conflict error from validation.
        for key in ("optimizer", "scheduler"):
            if key not in user:
                defaults[key] = None
    if "name" not in user:
        defaults.name = path.stem
    try:
        return OmegaConf.merge(defaults, user)
    except OmegaConfBaseException as exc:
        raise ConfigError.from_omegaconf(
            exc, path, "cannot merge with the defaults", "give this key the type shown in docs/train_yaml.md"
        ) from None


def _load_user_file(path: Path) -> DictConfig:
    try:
        loaded = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise ConfigError("<file>", path, f"not valid YAML ({exc})", "fix the YAML syntax") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(
            "<file>",
            path,
            f"the top level is a {type(loaded).__name__}, not a mapping",
            "write the config as `key: value` entries (see docs/train_yaml.md)",
        )
    return loaded
