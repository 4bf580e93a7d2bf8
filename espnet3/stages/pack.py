"""The pack stage: a trained run as one zip in espnet_model_zoo's layout.

ESPnet users share models as the zip that ``espnet_model_zoo`` downloads and
``espnet2.main_funcs.pack_funcs.unpack`` extracts: ``meta.yaml`` names the config and the model
file under the keyword arguments of the task's ESPnet2 inference class (``asr_train_config``,
``asr_model_file``, ...), and every file path inside ``config.yaml`` is a member of the zip, which
``unpack`` rewrites to where it extracted it. So ``Speech2Text(**unpack(zip, dir))`` (what
``Speech2Text.from_pretrained`` does) loads the model from the zip alone.

ESPnet2's own ``pack()`` archives paths relative to the working directory and writes no espnet3
version, hence this writer; the layout is the same.
"""

from __future__ import annotations

import sys
import time
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from espnet3.data.tokenizer import TokenStream
from espnet3.storage import atomic_save
from espnet3.systems.base.inference import TrainedModel

PACKED_DIR = "packed"
META_FILE = "meta.yaml"


def packed_path(exp_dir: Path, name: str) -> Path:
    return Path(exp_dir) / PACKED_DIR / f"{name}.zip"


def pack(
    model: TrainedModel,
    packed_as: tuple[str, str],
    exp_dir: Path,
    name: str,
    token_streams: Iterable[TokenStream] = (),
) -> Path:
    """Write ``exp_dir/packed/<name>.zip``; returns its path.

    Args:
        model: the run's ``config.yaml`` and the model file to ship.
        packed_as: the ESPnet2 inference class's argument names for the config and the model
            file (:attr:`espnet3.systems.registry.System.packed_as`).
        exp_dir: the run directory; files under it keep their place below ``exp/<name>/``.
        name: the run's name.
        token_streams: the run's token lists and BPE models, shipped under ``data/<key>/``.

    Raises:
        FileNotFoundError: when the config or the model file is missing (run the train stage first).
    """
    for path in (model.train_config, model.model_file):
        if not Path(path).is_file():
            raise FileNotFoundError(f"No trained model at {path}; run the train stage first.")
    exp_dir = Path(exp_dir).resolve()
    run_dir = f"exp/{name}"
    members: dict[str, Path] = {}
    for stream in token_streams:
        for path in (stream.token_list, stream.bpemodel):
            if path is not None and Path(path).is_file():
                members[f"data/{stream.key}/{Path(path).name}"] = Path(path).resolve()
    by_source = {source: member for member, source in members.items()}

    def member_for(path: Path) -> str:
        path = path.resolve()
        if path not in by_source:
            inside = path.is_relative_to(exp_dir)
            member = f"{run_dir}/{path.relative_to(exp_dir) if inside else Path('files') / path.name}"
            by_source[path] = member
            members[member] = path
        return by_source[path]

    config = _relocate(yaml.safe_load(Path(model.train_config).read_text()), member_for)
    config_member = f"{run_dir}/config.yaml"
    model_member = member_for(Path(model.model_file))
    meta = {
        "files": {packed_as[1]: model_member},
        "yaml_files": {packed_as[0]: config_member},
        "timestamp": time.time(),
        "python": sys.version,
        **_versions(),
    }
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(META_FILE, yaml.safe_dump(meta, sort_keys=False))
            archive.writestr(config_member, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
            for member, source in members.items():
                archive.write(source, member)

    return atomic_save(packed_path(exp_dir, name), write)


def _relocate(value: Any, member_for, key: str = "") -> Any:
    """``value`` with every path of an existing file replaced by its zip member name.

    ``*_scp`` options (noise and RIR lists for training-time augmentation) list data, not model
    files, and stay as they are.
    """
    if isinstance(value, Mapping):
        return {k: _relocate(v, member_for, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocate(v, member_for, key) for v in value]
    if isinstance(value, str) and not key.endswith("_scp") and "/" in value and Path(value).is_file():
        return member_for(Path(value))
    return value


def _versions() -> dict[str, str | None]:
    from espnet3.orchestration.provenance import versions

    found = versions()
    return {name: found.get(name) for name in ("espnet", "espnet3", "torch", "lightning", "ray")}
