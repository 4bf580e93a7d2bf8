"""train.yaml handling: defaults, overrides, validation and saving (docs/train_yaml.md)."""

from espnet3.errors import ConfigError
from espnet3.config.loader import load_config, load_defaults
from espnet3.config.save import save_config

__all__ = ["ConfigError", "load_config", "load_defaults", "save_config"]
