"""A sweep file parsed once into a validated :class:`SweepSpec` (docs/sweep_yaml.md)."""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from espnet3 import storage
from espnet3.config.loader import load_config, merge_with_defaults
from espnet3.config.overrides import apply_overrides
from espnet3.config.schema import validate
from espnet3.errors import SweepError
from espnet3.sweep.space import Dimension, check_space, parse_space

# What ESPnet2's ASR model returns as stats (espnet2/asr/espnet_model.py); the Lightning
# module logs each as train/<k> and valid/<k>.
ASR_STATS = ("loss", "loss_ctc", "loss_att", "acc", "cer", "wer", "cer_ctc")
ASR_TASKS = ("asr1", "espnet2.tasks.asr.ASRTask", "espnet3.systems.asr.task.ASRTask")


@dataclass(frozen=True)
class ASHASpec:
    """``scheduler: {asha: {...}}``: Ray Tune's ASHAScheduler.

    Attributes:
        max_t: ``time_attr`` at which every trial stops.
        grace_period: ``time_attr`` a trial runs before it can be stopped.
        reduction_factor: only the best 1/reduction_factor of trials go on at each rung.
    """

    max_t: int
    grace_period: int = 1
    reduction_factor: float = 4

    @classmethod
    def parse(cls, raw: Any, source: Path) -> ASHASpec | None:
        example = "{asha: {max_t: 8, grace_period: 1, reduction_factor: 2}}"
        if raw in (None, "none"):
            return None
        if not (isinstance(raw, Mapping) and set(raw) == {"asha"} and isinstance(raw["asha"], Mapping)):
            raise SweepError("scheduler", source, f"expected `none` or {example}, got {raw!r}", f"write `scheduler: {example}`")
        options = dict(raw["asha"])
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown or "max_t" not in options:
            problem = f"unknown option(s) {sorted(unknown)}" if unknown else "`max_t` is not set"
            raise SweepError("scheduler.asha", source, problem, f"write `scheduler: {example}`")
        spec = cls(**options)
        ints = all(_is_int(v) and v >= 1 for v in (spec.max_t, spec.grace_period))
        if not ints or spec.grace_period > spec.max_t or not _is_number(spec.reduction_factor) or spec.reduction_factor <= 1:
            raise SweepError("scheduler.asha", source, f"{options} needs integers 1 <= grace_period <= max_t and reduction_factor > 1", f"write `scheduler: {example}`")
        return spec


@dataclass
class SweepSpec:
    """A parsed, validated sweep file.

    Attributes:
        source: the sweep file.
        base: the base train config (defaults, ``overrides`` and command-line overrides
            applied, validated), interpolations left in place.
        config_dir: the directory a ``_target_`` model's code is imported from.
        space: the searched keys.
        metric, mode: what "best" means (``valid/loss``, ``min``).
        num_samples: trials to sample (each grid point is run ``num_samples`` times).
        max_concurrent_trials: trials running at once.
        workers_per_trial: Ray Train CPU workers per trial (``--num-gpus 0``); ``MIN-MAX`` in the
            file makes each trial an elastic group (this holds MAX, :attr:`min_per_trial` MIN).
        gpus_per_trial: Ray Train GPU workers per trial (``--num-gpus N``); ``MIN-MAX`` as above.
        min_per_trial: the elastic trials' MIN by key (``workers_per_trial``, ``gpus_per_trial``).
        cpus_per_worker: CPUs each worker reserves (fractions allowed).
        scheduler: ASHA early stopping, or ``None`` to run every trial to the end.
        search: ``random`` (Tune's variant generator) or ``optuna`` (TPE).
        seed: seeds the search; ``None`` samples differently on every run.
        name: the sweep's name; trial runs and results live in ``output_dir``.
        output_dir: Ray Tune's experiment directory; for a URI, its local copy
            (:func:`espnet3.storage.home` gives the URI back).
        time_attr: the result field ASHA counts in; ``training_iteration`` is the number of
            reports, one per validation (``report_every_n_steps`` gives several per epoch).
    """

    source: Path
    base: DictConfig
    config_dir: Path
    space: tuple[Dimension, ...]
    metric: str
    mode: str = "min"
    num_samples: int = 1
    max_concurrent_trials: int = 1
    workers_per_trial: int = 1
    gpus_per_trial: int = 1
    cpus_per_worker: float = 1.0
    scheduler: ASHASpec | None = None
    search: str = "random"
    seed: int | None = None
    name: str = ""
    output_dir: Path = Path()
    time_attr: str = "training_iteration"
    min_per_trial: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path, cli_overrides: Sequence[str] = ()) -> SweepSpec:
        """Parse and validate ``path``; ``cli_overrides`` apply to the base config.

        Raises:
            SweepError: naming the sweep-file key, the file and the fix.
            ConfigError: for a problem inside the base train.yaml.
            FileNotFoundError: when the sweep file or the base file does not exist.
        """
        source = Path(path)
        raw = _load(source)
        known = [f.name for f in fields(cls) if f.name not in ("source", "config_dir", "min_per_trial")] + ["overrides"]
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                fix = f"did you mean `{close[0]}`?" if close else f"valid keys: {', '.join(known)}"
                raise SweepError(str(key), source, "unknown sweep-file key", fix)
        for key in ("base", "space", "metric"):
            if raw.get(key) is None:
                raise SweepError(key, source, "required key is not set", "see docs/sweep_yaml.md")
        overrides = raw.pop("overrides", None) or []
        if not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
            raise SweepError("overrides", source, f"expected a list of `key=value` strings, got {overrides!r}", "write e.g. `overrides: [report_every_n_steps=2]`")
        base, config_dir = _load_base(raw.pop("base"), source, [*overrides, *cli_overrides])
        name = raw.pop("name", None) or source.stem
        spec = cls(
            source=source,
            base=base,
            config_dir=config_dir,
            space=parse_space(raw.pop("space"), source),
            scheduler=ASHASpec.parse(raw.pop("scheduler", None), source),
            name=str(name),
            # A URI (s3://...) is worked on through its local copy, as a run's exp_dir is.
            output_dir=Path(storage.localize(str(raw.pop("output_dir", None) or Path("sweeps") / str(name)))),
            **raw,
        )
        spec.validate()
        return spec

    def validate(self) -> None:
        src = self.source
        if not isinstance(self.metric, str) or self.metric.split("/")[0] not in ("valid", "train") or "/" not in self.metric:
            raise SweepError("metric", src, f"{self.metric!r} is not a logged metric", "name one like valid/loss or valid/acc (train/<k> and valid/<k> are what the model logs)")
        task = self.base.get("task")
        if task in ASR_TASKS and self.metric.split("/", 1)[1] not in ASR_STATS:
            raise SweepError("metric", src, f"`{task}` models do not log {self.metric}", f"use valid/<k> or train/<k> with k one of {', '.join(ASR_STATS)}")
        if self.mode not in ("min", "max"):
            raise SweepError("mode", src, f"{self.mode!r} is not min or max", "write `mode: min` (losses, error rates) or `mode: max` (accuracy)")
        for key in ("workers_per_trial", "gpus_per_trial"):
            value = getattr(self, key)
            if isinstance(value, str):  # MIN-MAX: elastic trials
                from espnet3.orchestration.launch_spec import parse_size

                try:
                    low, high = parse_size(value, f"`{key}`")
                except ValueError as exc:
                    raise SweepError(key, src, str(exc).rstrip("."), f"set `{key}` to N or MIN-MAX, e.g. 1-2") from None
                if low < 1:
                    raise SweepError(key, src, f"MIN of {value!r} is 0", f"set `{key}` to MIN-MAX with MIN >= 1")
                setattr(self, key, high)
                self.min_per_trial[key] = low if low < high else None
        for key in ("num_samples", "max_concurrent_trials", "workers_per_trial", "gpus_per_trial"):
            value = getattr(self, key)
            if not (_is_int(value) and value >= 1):
                raise SweepError(key, src, f"expected an integer >= 1, got {value!r}", f"set `{key}` to 1 or more")
        if not (_is_number(self.cpus_per_worker) and self.cpus_per_worker > 0):
            raise SweepError("cpus_per_worker", src, f"expected a number > 0, got {self.cpus_per_worker!r}", "set e.g. `cpus_per_worker: 1` (fractions such as 0.5 are allowed)")
        if self.seed is not None and not _is_int(self.seed):
            raise SweepError("seed", src, f"expected an integer or null, got {self.seed!r}", "set e.g. `seed: 0`")
        if not isinstance(self.time_attr, str) or not self.time_attr:
            raise SweepError("time_attr", src, f"expected a result field name, got {self.time_attr!r}", "use training_iteration (one per report), step or epoch")
        if self.search not in ("random", "optuna"):
            raise SweepError("search", src, f"{self.search!r} is not random or optuna", "write `search: random` or `search: optuna`")
        if self.search == "optuna":
            grid = [d.path for d in self.space if d.kind == "grid"]
            if grid:
                raise SweepError(f"space.{grid[0]}", src, "`grid` cannot be used with `search: optuna` (OptunaSearch rejects grid_search)", "use `choice` for this key, or `search: random`")
            if importlib.util.find_spec("optuna") is None:
                raise SweepError("search", src, "`search: optuna` needs the optuna package, which is not installed", "pip install optuna, or use `search: random`")
        check_space(self.space, self.base, src)

    def summary(self) -> str:
        lines = [f"sweep {self.name} ({self.source}) -> {self.output_dir}"]
        lines += [f"  {d.path}: {d.kind} {list(d.values)}" for d in self.space]
        asha = f"ASHA {self.scheduler}" if self.scheduler else "no early stopping"
        lines.append(f"  {self.metric} ({self.mode}); {self.num_samples} sample(s), {self.max_concurrent_trials} at once; search {self.search}; {asha}")
        return "\n".join(lines)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _load(source: Path) -> dict[str, Any]:
    if not source.is_file():
        raise FileNotFoundError(f"sweep file {source} does not exist")
    try:
        # OmegaConf's loader, not yaml.safe_load: it reads `1e-4` as a float.
        loaded = OmegaConf.to_container(OmegaConf.load(source), resolve=False)
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise SweepError("<file>", source, f"not valid YAML ({exc})", "fix the YAML syntax") from None
    if not isinstance(loaded, dict):
        raise SweepError("<file>", source, "the top level is not a mapping", "write the sweep as `key: value` entries (see docs/sweep_yaml.md)")
    return loaded


def _load_base(base: Any, source: Path, overrides: list[str]) -> tuple[DictConfig, Path]:
    if isinstance(base, str):
        path = (source.parent / base).resolve()
        if not path.is_file():
            raise SweepError("base", source, f"base train config {path} does not exist", "give a path relative to the sweep file, or an inline mapping")
        from espnet3.utils.code_dir import config_code_dir

        return load_config(path, overrides), config_code_dir(path)
    if isinstance(base, Mapping):
        cfg = merge_with_defaults(OmegaConf.create(dict(base)), source)
        apply_overrides(cfg, overrides, source)
        validate(cfg, source)
        return cfg, source.resolve().parent
    raise SweepError("base", source, f"expected a train.yaml path or a mapping, got {base!r}", "write `base: ../configs/tiny_asr.yaml` (relative to the sweep file)")
