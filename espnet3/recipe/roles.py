"""Load an egs3 recipe's role configs (``conf/training.yaml``, ``conf/inference.yaml``, ...).

Each is merged over its ``egs3.TEMPLATE.<system>`` file, the other roles take the training
config's experiment (as upstream's runner makes them), and all are resolved: the
RoleConfig objects that :mod:`espnet3.recipe.convert` translates. Both
front doors use this: a recipe's ``run.py`` and ``python -m espnet3.launch --config
conf/training.yaml`` (so ``--sweep``, ``--slurm`` and ``--resume`` apply to recipes too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from espnet3.errors import ConfigError
from espnet3.recipe.convert import RoleConfig
from espnet3.utils.code_dir import recipe_root

DEFAULT_TEMPLATE = "egs3.TEMPLATE.esp2_asr"
# `${name}`, `${name.key}` or `${name[0]}`: a reference to a config node (a resolver call,
# `${self_name:}`, is not one).
NODE_REFERENCE = re.compile(r"\$\{\s*([A-Za-z_]\w*)\s*(?=[.}\[])")
# Keys of an egs3 training config that a train.yaml never has.
RECIPE_ONLY_KEYS = ("dataset", "num_device", "num_nodes", "recipe_dir")


def is_recipe_config(config_path: str | Path, values: Mapping) -> bool:
    """Whether a config file given to ``espnet3.launch`` is an egs3 training config, not a train.yaml."""
    return recipe_root(config_path) is not None or any(key in values for key in RECIPE_ONLY_KEYS)


def load_roles(paths: Mapping[str, Path], template: str = DEFAULT_TEMPLATE,
               recipe_dir: Path | None = None) -> dict[str, RoleConfig]:
    """``role -> RoleConfig`` for the given files. ``recipe_dir`` replaces the TEMPLATE's ``.``
    (upstream's "the directory run.py runs in"), so a recipe resolves alike from anywhere."""
    from espnet3.utils.config_utils import load_and_merge_config

    loaded: dict[str, DictConfig] = {}
    for role, path in paths.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"--{role}_config {path} does not exist")
        try:
            loaded[role] = load_and_merge_config(Path(path), config_name=f"{role}.yaml", resolve=False,
                                                 default_package=template)
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise ConfigError(getattr(exc, "full_key", None) or "<file>", path, f"does not load ({exc})",
                              "fix the YAML or the interpolation") from None
        if recipe_dir is not None and str(loaded[role].get("recipe_dir")) == ".":
            loaded[role].recipe_dir = str(recipe_dir)
    share_experiment(loaded)
    configs = {}
    for role, values in loaded.items():
        variables = referenced_names(OmegaConf.to_container(values, resolve=False))
        try:
            OmegaConf.resolve(values)
        except OmegaConfBaseException as exc:
            raise ConfigError(getattr(exc, "full_key", None) or "<file>", paths[role], f"does not resolve ({exc})",
                              "fix the interpolation") from None
        configs[role] = RoleConfig(role, Path(paths[role]), values, variables)
    return configs


def referenced_names(node: Any) -> frozenset[str]:
    """The top-level names a config's values interpolate (``${cache}``, ``${tokenizer.save_path}``):
    a recipe's own variables, such as spgispeech's ``cache`` block, which upstream's code never reads
    but the recipe's other keys do."""
    if isinstance(node, Mapping):
        return frozenset().union(*(referenced_names(v) for v in node.values()))
    if isinstance(node, list):
        return frozenset().union(*(referenced_names(v) for v in node))
    return frozenset(NODE_REFERENCE.findall(node)) if isinstance(node, str) else frozenset()


def share_experiment(configs: Mapping[str, DictConfig]) -> None:
    """As upstream's runner does: the training config's ``exp_tag`` and ``exp_dir`` are every other
    role's (inference reads the trained model there), and metrics and publication read the outputs
    in the inference config's ``inference_dir``."""
    training = configs.get("training")
    if training is not None:
        for role, values in configs.items():
            if role != "training":
                values.exp_tag = training.exp_tag
                values.exp_dir = str(training.exp_dir)
    inference = configs.get("inference")
    if inference is not None:
        for role in ("metrics", "publication"):
            if role in configs:
                configs[role].inference_dir = str(inference.inference_dir)


def recipe_train_yaml(config_path: str | Path) -> dict:
    """The train.yaml of an egs3 training config given to ``espnet3.launch --config`` (or a sweep's
    ``base:``): its recipe's ``run.py`` stages create_dataset and train_tokenizer come first."""
    from espnet3.recipe.convert import train_yaml

    path = Path(config_path)
    training = load_roles({"training": path}, recipe_dir=recipe_root(path) or Path.cwd())["training"]
    return train_yaml(training)
