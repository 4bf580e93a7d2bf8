"""What the launcher does before training: absolute paths, stages, the corpus and the data plan.

Shared by a single run (:mod:`espnet3.launch`) and a sweep (:mod:`espnet3.sweep.runner`), which
both prepare data once on the driver so that workers (and concurrent trials) never race to write it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from espnet3.data.plan import DataPlan, build_data_plan
from espnet3.storage import is_uri

# Keys holding paths that Ray workers (which do not run in the launcher's directory) read.
PATH_KEYS = ("exp_dir", "stats_dir", "data.token_list", "data.bpemodel", "data.synth.dir")
# The run's own files, which may live in object storage (the corpus may not, yet).
RUN_KEYS = PATH_KEYS[:4]


def absolutize(cfg: DictConfig) -> None:
    """Make path keys and data paths absolute, so a saved config works from any directory.

    Ray workers do not run in the launcher's directory either. ``${...}`` interpolations are
    left alone (``${exp_dir}/stats`` follows the key it starts from).
    """
    raw = OmegaConf.to_container(cfg, resolve=False)
    for key in PATH_KEYS:
        node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        value = raw
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if node is None or is_uri(node) or (isinstance(value, str) and value.startswith("${")):
            continue
        OmegaConf.update(cfg, key, str(Path(node).resolve()))
    _map_sources(cfg, raw, lambda path: path if is_uri(path) else str(Path(path).resolve()))


def _map_sources(cfg: DictConfig, raw: dict, fix) -> dict[str, list[str]]:
    """Apply ``fix`` to every data path (a split's directory, each triple's path) that is not an
    interpolation; returns the original paths per split key (``data.train``)."""
    data = raw.get("data") or {}
    sources = {f"data.{split}": data[split] for split in ("train", "valid") if split in data} | {
        f"data.test.{name}": source for name, source in (data.get("test") or {}).items()}
    originals: dict[str, list[str]] = {}
    for key, source in sources.items():
        paths = originals.setdefault(key, [])
        if isinstance(source, str) and not source.startswith("${"):
            paths.append(source)
            OmegaConf.update(cfg, key, fix(source), merge=False)
        elif isinstance(source, list):
            fixed = []
            for entry in source:
                parts = entry.split(",") if isinstance(entry, str) else entry
                if isinstance(parts, list) and len(parts) == 3 and isinstance(parts[0], str) and not parts[0].startswith("${"):
                    paths.append(parts[0].strip())
                    parts = [fix(parts[0].strip()), *parts[1:]]
                fixed.append(parts)
            OmegaConf.update(cfg, key, fixed, merge=False)
    return originals


def localize(cfg: DictConfig, source: Path | None) -> list[str]:
    """Replace every path key that is a URI by its local copy (:mod:`espnet3.storage`); returns the URIs.

    Each bucket is written to once first, so a missing bucket, missing credentials or a dead
    endpoint is a configuration error now, not a failure after training. Keys derived by
    interpolation (``stats_dir: ${exp_dir}/stats``) follow the key they start from.
    """
    from espnet3 import storage
    from espnet3.errors import ConfigError
    from espnet3.data import remote

    raw = OmegaConf.to_container(cfg, resolve=False)
    uris, checked = [], {}
    for key in RUN_KEYS:
        value = raw
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not is_uri(value):
            continue
        problem = checked.setdefault(value, storage.check_reachable(value))
        if problem is not None:
            raise ConfigError(key, source, problem, None)
        OmegaConf.update(cfg, key, storage.localize(value))
        uris.append(value)
    data = raw.get("data") or {}
    generated = {"data.synth.dir": (data.get("synth") or {}).get("dir"), "data.train": data.get("train") if data.get("digits") else None}
    for key, value in generated.items():
        if is_uri(value):
            raise ConfigError(key, source, "a generated corpus (data.digits, data.synth) is written on this machine",
                              "give a local or shared-filesystem path (upload the corpus afterwards to train from a bucket)")
    for key, paths in _map_sources(cfg, raw, storage.localize).items():
        for uri in filter(is_uri, paths):
            problem = checked.setdefault(uri, storage.check_readable(uri))
            if problem is not None:
                raise ConfigError(key, source, problem, None)
            fetch = remote.fetch_directory if storage.is_dir(uri) else remote.fetch_list
            fetch(storage.local_copy(uri), refresh=True)  # the bucket is the truth: a list may have changed since
            uris.append(uri)
    return uris


# What the driver never reads back from a run in object storage: Ray's checkpoints (the train
# stage reads the few it averages), logs, TensorBoard events and packed archives.
NOT_FETCHED = ("checkpoint_", "logs/", "tensorboard/", "packed/")


def fetch_run_files(cfg, fresh: bool) -> None:
    """Bring the local copies of a run in object storage up to date before the driver reads them.

    ``fresh`` (a new training run): the local copy is emptied first, so that nothing of an older
    run under the same URI (a token list, statistics) is taken for this one's. A resumed or
    finished run gets what the bucket has and this machine lacks. Plain paths: nothing to do.
    """
    import shutil

    from espnet3 import storage

    exp_dir = Path(cfg["exp_dir"])
    if storage.uri_of(exp_dir) is not None:
        if fresh:
            shutil.rmtree(exp_dir, ignore_errors=True)
        storage.pull_tree(exp_dir, skip=lambda relative: relative.startswith(NOT_FETCHED))
    storage.pull_tree(cfg["stats_dir"], skip=lambda relative: relative.startswith("logs/"))
    for key in ("token_list", "bpemodel"):  # may live outside exp_dir, shared between runs
        if cfg["data"].get(key):
            storage.pull(cfg["data"][key])


def default_stages(cfg: DictConfig) -> list[str]:
    stages = []
    from espnet3.stages.collect_stats import uses_collected_stats

    if cfg.get("task") and uses_collected_stats(cfg.get("model")):
        stages.append("collect_stats")
    stages.append("train")
    if cfg.data.get("test"):
        stages += ["infer", "measure"]
    return stages


def splits_for(cfg: DictConfig, stages: Sequence[str]) -> list[str]:
    """The data splits the stages read: train/valid to train, the test splits to infer and measure."""
    splits = []
    if {"collect_stats", "train"} & set(stages):
        splits += ["train", "valid"]
    if {"infer", "measure"} & set(stages):
        splits += list(cfg.data.get("test") or {})
    return splits


def make_corpus(cfg: DictConfig) -> None:
    """Synthesise the corpus a config asks for (``data.digits``, ``data.synth``) unless it is already there."""
    if cfg.data.get("digits"):
        from espnet3.corpora.digits import generate_corpus

        root = Path(str(cfg.data.train)).parent
        generate_corpus(root, **OmegaConf.to_container(cfg.data.digits, resolve=True))
    if cfg.data.get("synth"):
        from espnet3.corpora.synth import generate

        options = OmegaConf.to_container(cfg.data.synth, resolve=True)
        generate(options.pop("task"), Path(options.pop("dir")), **options)


def prepare_data(cfg: DictConfig, stages: Sequence[str]) -> DataPlan:
    """The corpus, the token lists and the checked data plan of ``cfg`` (see :mod:`espnet3.data.plan`)."""
    make_corpus(cfg)
    return build_data_plan(OmegaConf.to_container(cfg, resolve=True), splits=splits_for(cfg, stages))


def stats_model(cfg: DictConfig, plan: DataPlan):
    """A picklable ``model_cfg -> model`` for collect_stats' Ray tasks, and the ``model_cfg``.

    Task models are built from the plan's ESPnet2 args (with the run's token lists), others
    from their ``model._target_`` block.
    """
    from espnet3.utils.task_utils import build_task_model, instantiate_model

    if cfg.get("task"):
        return functools.partial(build_task_model, plan.preprocess.task), plan.preprocess.args
    return instantiate_model, OmegaConf.to_container(cfg.model, resolve=True)
