"""Upstream ESPnet3's config loading, at its import path, for egs3 recipes.

Recipes import these to read their YAML: Hydra-style ``defaults:`` lists composed without Hydra's
runtime, and a recipe's ``conf/<file>`` merged over the release's TEMPLATE default
(``egs3.TEMPLATE.<system>``). Importing this module registers upstream's OmegaConf resolvers.

Resolver callbacks only see their arguments, never the file that used them, so the expressions
that depend on the file are rewritten while it is loaded (as upstream does):

* ``${self_name:}`` becomes the stem of the file (for :func:`load_and_merge_config`, the user's
  file, also in values inherited from the default: the TEMPLATE's ``exp_tag: ${self_name:}``);
* ``${config_path:rel}`` and ``${load_line:rel}`` get an absolute path, relative to the file's
  directory;
* ``${set_corpus_and_system:}`` gets ``<corpus>_<system>`` from an ``egs3/<corpus>/<system>/conf/``
  path.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

_PATH_RESOLVER = re.compile(r"\$\{(?P<resolver>load_line|config_path):(?P<path>[^,}]+)")


def load_line(path: str) -> ListConfig:
    """``${load_line:tokens.txt}``: the file's lines, stripped (a token list kept beside the config)."""
    with open(path, encoding="utf-8") as f:
        return ListConfig([line.strip() for line in f])


def _bound_at_load(value: str) -> str:
    """``${self_name:}`` and ``${config_path:}``: the value was put in when the file was loaded."""
    return value


def set_corpus_and_system(value: str) -> str:
    """``${set_corpus_and_system:}``: ``<corpus>_<system>``, put in when the file was loaded."""
    if not value:
        raise ValueError(
            "${set_corpus_and_system:} was not filled in: load the config with load_and_merge_config "
            "from a file under egs3/<corpus>/<system>/conf/"
        )
    return value


RESOLVERS: dict[str, Callable[[str], Any]] = {
    "load_line": load_line,
    "self_name": _bound_at_load,
    "config_path": _bound_at_load,
    "set_corpus_and_system": set_corpus_and_system,
}
for _name, _resolver in RESOLVERS.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


def load_config_with_defaults(path: str | Path, resolve: bool = True) -> DictConfig:
    """Load a YAML file and compose its ``defaults:`` list, recursively.

    Entries, relative to the file's directory: ``name`` (``name.yaml``), ``{group: option}``
    (``group/option.yaml``, nested under ``group``; ``null`` skips it) and ``_self_`` (the file
    itself; last when not listed). As upstream, a file without a ``defaults:`` list comes back as
    written (only the load-time rewrites applied); a composed one is resolved when ``resolve``,
    loses its ``defaults`` key and gets ``_convert_: all`` beside every ``_target_``.
    """
    return _load(Path(path), resolve=resolve, bind_name=True)


def load_default_config(config_name: str, default_package: str) -> DictConfig:
    """``conf/<config_name>`` of an installed recipe package (``egs3.TEMPLATE.esp2_asr``), unresolved."""
    return _load_default(config_name, default_package, bind_name=True)


def load_and_merge_config(
    config_path: str | Path | None,
    config_name: str,
    default_package: str | None = None,
    resolve: bool = True,
) -> DictConfig | None:
    """The user's config merged over the same file of a recipe package; ``None`` for no path.

    ``default_package`` defaults to ``egs3.TEMPLATE.<system>`` for a file under
    ``egs3/<corpus>/<system>/conf/``. Both files are loaded unresolved, so the user's file may
    use keys only the default defines; the merged config is then resolved (when ``resolve``) and
    gets ``_convert_: all`` beside every ``_target_``.
    """
    if config_path is None:
        return None
    config_path = Path(config_path)
    if default_package is None:
        recipe = _egs3_recipe(config_path)
        if recipe is None:
            raise ValueError(
                f"cannot tell the default config package of {config_path}: it is not under "
                "egs3/<corpus>/<system>/conf/; pass default_package, e.g. "
                "default_package='egs3.TEMPLATE.esp2_asr'"
            )
        default_package = f"egs3.TEMPLATE.{recipe[1]}"
    default = _load_default(config_name, default_package, bind_name=False)
    user = _load(config_path, resolve=False, bind_name=False)
    merged = _rewritten(OmegaConf.merge(default, user), config_path.parent, config_path.stem)
    if resolve:
        OmegaConf.resolve(merged)
    return _with_convert_all(merged)


def _load_default(config_name: str, default_package: str, bind_name: bool) -> DictConfig:
    try:
        conf_dir = resources.files(default_package).joinpath("conf")
    except ModuleNotFoundError:
        raise ValueError(
            f"default_package {default_package!r} is not installed; install espnet (it ships egs3) "
            "or pass the package of the recipe your config builds on"
        ) from None
    resource = conf_dir.joinpath(config_name)
    if not resource.is_file():
        known = sorted(p.name for p in conf_dir.iterdir()) if conf_dir.is_dir() else []
        raise ValueError(
            f"{default_package} has no conf/{config_name}; pass one of {known} as config_name, "
            "or a default_package that has this file"
        )
    with resources.as_file(resource) as path:
        return _load(Path(path), resolve=False, bind_name=bind_name)


def _load(path: Path, resolve: bool, bind_name: bool) -> DictConfig:
    """One file with its defaults; ``bind_name=False`` leaves ``${self_name:}`` for the caller."""
    config = _rewritten(OmegaConf.load(path), path.parent, path.stem if bind_name else None)
    if "defaults" not in config:
        return config
    parts: list[Any] = []
    for entry in config.defaults:
        if isinstance(entry, str):
            parts.append(config if entry == "_self_" else _load(_default_file(path, entry), resolve, bind_name))
        elif isinstance(entry, DictConfig):
            for group, option in entry.items():
                if option is None:
                    continue
                if not isinstance(option, str):
                    raise TypeError(f"{path}: defaults entry {group}: {option!r} must name one file")
                relative = option if "/" in option else f"{group}/{option}"
                parts.append({group: _load(_default_file(path, relative), resolve, bind_name)})
        else:
            raise TypeError(
                f"{path}: defaults entry {entry!r} is neither a file name, a {{group: option}} "
                "mapping nor _self_"
            )
    if not any(part is config for part in parts):
        parts.append(config)
    merged = OmegaConf.merge(*parts)
    if resolve:
        OmegaConf.resolve(merged)
    merged.pop("defaults", None)
    return _with_convert_all(merged)


def _default_file(including: Path, entry: str) -> Path:
    suffix = Path(entry).suffix
    if suffix and suffix != ".yaml":
        raise ValueError(
            f"{including}: defaults entry {entry!r} names a {suffix} file; "
            "write the .yaml file's name with or without .yaml"
        )
    return including.parent / (entry if suffix else f"{entry}.yaml")


def _egs3_recipe(path: Path) -> tuple[str, str] | None:
    """``(corpus, system)`` of a path under ``egs3/<corpus>/<system>/conf``, else ``None``."""
    parts = path.resolve().parts
    if "egs3" not in parts:
        return None
    start = parts.index("egs3")
    conf = next((i for i in range(start + 1, len(parts)) if parts[i] == "conf"), None)
    if conf is None or conf - start < 3:
        return None
    return parts[start + 1], parts[conf - 1]


def _rewritten(config: DictConfig, base_dir: Path, name: str | None) -> DictConfig:
    """``config`` with the file-dependent resolver expressions filled in (see the module doc)."""
    recipe = _egs3_recipe(base_dir) if name is not None else None

    def rewrite(value: str) -> str:
        if name is not None:
            value = value.replace("${self_name:}", name)
        if recipe is not None:
            value = value.replace("${set_corpus_and_system:}", "${set_corpus_and_system:%s_%s}" % recipe)
        return _PATH_RESOLVER.sub(lambda match: _absolute(match, base_dir), value)

    return OmegaConf.create(_map_strings(OmegaConf.to_container(config, resolve=False), rewrite))


def _absolute(match: re.Match, base_dir: Path) -> str:
    raw = match.group("path").strip()
    quote = raw[0] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" else ""
    relative = raw[1:-1].strip() if quote else raw
    if "${" in relative or Path(relative).is_absolute():
        return match.group(0)
    return f"${{{match.group('resolver')}:{quote}{(base_dir / relative).resolve().as_posix()}{quote}"


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {key: _map_strings(item, fn) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_strings(item, fn) for item in value]
    return fn(value) if isinstance(value, str) else value


def _with_convert_all(config: DictConfig) -> DictConfig:
    """``_convert_: all`` beside every ``_target_``: instantiated objects get plain dicts and lists."""

    def add(value: Any) -> Any:
        if isinstance(value, dict):
            value = {key: add(item) for key, item in value.items()}
            return {**value, "_convert_": "all"} if "_target_" in value else value
        if isinstance(value, list):
            return [add(item) for item in value]
        return value

    return OmegaConf.create(add(OmegaConf.to_container(config, resolve=False)))
