"""Where a dataset entry's ``Dataset`` class comes from, as upstream ESPnet3 resolves ``data_src``.

* omitted: the recipe's own ``<recipe_dir>/dataset/__init__.py``, loaded as a package;
* a tag ``<corpus>/<system>``: the installed ``egs3.<corpus>.<system>.dataset``;
* anything else: a dotted module path.

The module's ``Dataset`` must subclass
:class:`~espnet3.components.data.base_dataset.BaseDataset`; only the entry's ``data_src_args`` go
to its constructor (``name`` and ``transform`` belong to the split, not to the dataset).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from espnet3.components.data.base_dataset import BaseDataset


def load_dataset_module(data_src: str | None = None, recipe_dir: str | Path | None = None) -> ModuleType:
    """The dataset module ``data_src`` names (see the module doc); imported, nothing instantiated."""
    if data_src is None:
        if recipe_dir is None:
            raise ValueError(
                "data_src is not set and neither is recipe_dir: set data_src (e.g. mini_an4/esp2_asr) "
                "or recipe_dir, the recipe root whose dataset/__init__.py defines Dataset"
            )
        return _load_local_package(Path(recipe_dir) / "dataset" / "__init__.py")
    module_name = data_src
    if "/" in data_src:
        module_name = ".".join(["egs3", *(part.replace("-", "_") for part in data_src.split("/")), "dataset"])
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # A missing dependency inside the dataset module is the module's error, not an unresolved data_src.
        if err.name is None or not (module_name == err.name or module_name.startswith(err.name + ".")):
            raise
        raise ValueError(
            f"data_src {data_src!r} does not resolve: tried to import {module_name!r} ({err}). Use a "
            "<corpus>/<system> tag of an installed egs3 recipe (mini_an4/esp2_asr -> "
            "egs3.mini_an4.esp2_asr.dataset), a dotted module path, or omit data_src to use "
            "<recipe_dir>/dataset/__init__.py"
        ) from None


def instantiate_dataset_reference(config: Mapping[str, Any], recipe_dir: str | Path | None = None) -> BaseDataset:
    """``Dataset(**data_src_args)`` of the module an entry's ``data_src`` names."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if not isinstance(config, Mapping):
        raise TypeError(f"a dataset entry is a mapping such as {{data_src_args: {{split: train}}}}, not {config!r}")
    data_src = config.get("data_src")
    if data_src is not None and not isinstance(data_src, str):
        raise TypeError(f"data_src {data_src!r} must be a string (a tag or a module path) or left out")
    data_src = (data_src or "").strip() or None
    args = config.get("data_src_args") or {}
    if not isinstance(args, Mapping):
        raise TypeError(
            f"data_src_args of {data_src or 'the local dataset'} must be a mapping of Dataset(...) keywords"
        )
    module = load_dataset_module(data_src, recipe_dir)
    dataset_cls = getattr(module, "Dataset", None)
    if dataset_cls is None:
        raise ValueError(
            f"{module.__name__} ({data_src or 'local dataset'}) has no `Dataset`; export your "
            "BaseDataset subclass as `Dataset` from it"
        )
    if not (isinstance(dataset_cls, type) and issubclass(dataset_cls, BaseDataset)):
        raise TypeError(
            f"{module.__name__}.Dataset does not subclass BaseDataset; derive it from "
            "espnet3.components.data.base_dataset.BaseDataset and declare its `fields`"
        )
    return dataset_cls(**dict(args))


def _load_local_package(init_file: Path) -> ModuleType:
    """``init_file``'s directory as a package, under a name unique to its path (recipes share ``dataset``)."""
    if not init_file.is_file():
        raise ValueError(
            f"data_src is not set, so the recipe's own dataset package was tried, but {init_file} does not "
            "exist; add dataset/__init__.py exporting Dataset to the recipe, fix recipe_dir, or set data_src"
        )
    init_file = init_file.resolve()
    digest = hashlib.sha1(init_file.parent.as_posix().encode()).hexdigest()[:12]
    name = f"_espnet3_local_dataset_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, init_file, submodule_search_locations=[str(init_file.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
