"""``espnet3.systems.launch.launch``: an egs3 recipe's ``run.py``, with its training on Ray Train workers.

``launch(ASRSystem)`` takes upstream's command line (``--stages``, ``--<role>_config``,
``--dry_run``) plus this project's cluster options (``--address``, ``--resume``, ``--num_gpus``).
Every requested role config is loaded and translated before anything runs, so a bad key stops
the recipe with exit code 2 naming the key and the file, before a dataset is built or a Ray
worker starts. The local stages (``create_dataset``, ``train_tokenizer``) run here; the others
run as one ``python -m espnet3.launch`` of the train.yaml the configs amount to, written to
``<recipe_dir>/<exp_tag>.espnet3.yaml``: beside ``src/`` (whose classes its ``_target_`` entries name; the
launcher ships a config's directory to the workers) and runnable by itself with ``--sweep`` or
``--slurm``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from espnet3.driver.signals import EXIT_USAGE
from espnet3.recipe.convert import RoleConfig, train_yaml, worker_count
from espnet3.systems.base.system import ONLINE_STAGES, RAY_STAGES


def build_parser(system_cls: type) -> argparse.ArgumentParser:
    names = system_cls.stage_names()
    parser = argparse.ArgumentParser(description=f"Run the stages of a {system_cls.__name__} recipe (espnet3 on Ray).")
    parser.add_argument("--stages", nargs="+", default=names, choices=[*names, "all"], help="stages to run, or all")
    for role in system_cls.roles():
        parser.add_argument(f"--{role}_config", type=Path, default=None, help=f"the {role} config (conf/{role}.yaml)")
    parser.add_argument("--dry_run", action="store_true", help="load and check every config, print the plan, run nothing")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local cluster)")
    parser.add_argument("--resume", action="store_true", help="continue the training run already in exp_dir")
    parser.add_argument("--num_gpus", type=int, default=None,
                        help="GPU workers (default: num_device x num_nodes when this machine has a GPU, else 0)")
    parser.add_argument("--verbose", action="store_true", help="show Python tracebacks of errors")
    return parser


def launch(system_cls: type, *, conf_package: str | None = None, argv: Sequence[str] | None = None,
           parser: argparse.ArgumentParser | None = None) -> None:
    """Run ``run.py``'s stages and exit with their status (0, 1 for a failed stage, 2 for a bad input).

    Upstream's signature: ``conf_package`` holds the defaults the role configs merge over
    (``egs3.TEMPLATE.<system>`` by default), ``parser`` a recipe's own (from :func:`build_parser`).
    """
    sys.exit(run(system_cls, argv, conf_package=conf_package, parser=parser))


def run(system_cls: type, argv: Sequence[str] | None = None, conf_package: str | None = None,
        parser: argparse.ArgumentParser | None = None) -> int:
    from espnet3.errors import ConfigError

    args = (parser or build_parser(system_cls)).parse_args(argv)
    args.conf_package = conf_package or f"egs3.TEMPLATE.{system_cls.template}"
    stages = [s for s in system_cls.stage_names() if s in args.stages]
    if "all" in args.stages:
        stages, skipped = _all_stages(system_cls, args)
        if skipped:
            print(f"[espnet3] --stages all: skipping {'; '.join(skipped)}", flush=True)
    try:
        configs = load_roles(system_cls, args, stages)
        plan = _Plan(configs, stages, args)
    except (ConfigError, FileNotFoundError, ValueError, TypeError) as exc:
        if args.verbose:
            raise
        print(f"run.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"[espnet3] {system_cls.__name__} stages: {' '.join(stages)}", flush=True)
    if args.dry_run:
        for line in plan.describe():
            print(line)
        return 0
    return plan.execute()


def _all_stages(system_cls: type, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``--stages all``: every stage this project runs offline whose role configs were given."""
    stages, skipped = [], []
    for spec in system_cls.stages:
        missing = [r for r in spec.roles if getattr(args, f"{r}_config", None) is None]
        if spec.name in ONLINE_STAGES:
            skipped.append(f"{spec.name} (needs the network)")
        elif missing:
            skipped.append(f"{spec.name} (no --{missing[0]}_config)")
        else:
            stages.append(spec.name)
    return stages, skipped


def load_roles(system_cls: type, args: argparse.Namespace, stages: Sequence[str]) -> dict[str, RoleConfig]:
    """Every role config the stages need (:func:`espnet3.recipe.roles.load_roles`)."""
    from espnet3.recipe import roles

    needed: dict[str, str] = {}
    for name in stages:
        if name in ONLINE_STAGES:
            raise ValueError(f"stage `{name}` needs the network (Hugging Face Hub) or a demo server, which espnet3 "
                             "does not reach; leave it out of --stages (pack_model writes what you would upload)")
        for role in system_cls.stage(name).roles:
            needed.setdefault(role, name)
        if name in RAY_STAGES:  # one espnet3 run: its exp_dir, model and data come from the training config
            needed.setdefault("training", name)
    paths = {}
    for role, stage in needed.items():
        paths[role] = getattr(args, f"{role}_config")
        if paths[role] is None:
            raise ValueError(f"stage `{stage}` reads the {role} config, which was not given: pass "
                             f"--{role}_config conf/{role}.yaml (or leave `{stage}` out of --stages)")
    return roles.load_roles(paths, args.conf_package, recipe_dir=Path(sys.argv[0]).resolve().parent
                            if Path(sys.argv[0]).name == "run.py" else None)


class _Plan:
    """What the recipe's stages will do: local stages first, then one espnet3.launch of the rest."""

    def __init__(self, configs: dict[str, RoleConfig], stages: Sequence[str], args: argparse.Namespace):
        self.configs, self.stages, self.args = configs, list(stages), args
        self.ray_stages = [RAY_STAGES[s] for s in stages if s in RAY_STAGES]
        self.train_yaml = None
        self.config_path = None
        training = configs.get("training")
        if self.ray_stages:
            if training is None:
                raise ValueError(f"stages {', '.join(s for s in stages if s in RAY_STAGES)} read the training "
                                 "config, which was not given: pass --training_config conf/training.yaml")
            self.train_yaml = train_yaml(training, configs.get("inference"), configs.get("metrics"))
            recipe_dir = Path(str(training.values["recipe_dir"])).resolve()
            self.config_path = recipe_dir / f"{self.train_yaml['name']}.espnet3.yaml"

    def launch_argv(self) -> list[str]:
        training = self.configs["training"]
        workers = worker_count(training)
        gpus = self.args.num_gpus if self.args.num_gpus is not None else (workers if _has_gpu(training) else 0)
        argv = ["--config", str(self.config_path), "--num-gpus", str(gpus), "--stages", *self.ray_stages]
        if gpus == 0:
            argv += ["--num-workers", str(workers)]
        if self.args.address:
            argv += ["--address", self.args.address]
        if self.args.resume:
            argv.append("--resume")
        if self.args.verbose:
            argv.append("--verbose")
        return argv

    def describe(self) -> list[str]:
        lines = [f"  {s}: in this process" for s in self.stages if s not in RAY_STAGES]
        if self.ray_stages:
            lines.append(f"  {' '.join(self.ray_stages)}: python -m espnet3.launch {' '.join(self.launch_argv())}")
            lines.append(yaml.safe_dump(self.train_yaml, sort_keys=False))
        return lines

    def execute(self) -> int:
        from espnet3.recipe import stages as local

        training = self.configs.get("training")
        recipe_dir = Path(str(training.values["recipe_dir"])).resolve() if training else Path.cwd()
        if str(recipe_dir) not in sys.path:  # the recipe's src/ (text builders, preprocessors)
            sys.path.insert(0, str(recipe_dir))
        for name in self.stages:
            if name == "create_dataset":
                try:
                    prepared = local.create_dataset(training)
                except FileNotFoundError as exc:  # the recipe's builder did not find its corpus
                    if self.args.verbose:
                        raise
                    print(f"run.py: error: create_dataset: {exc}", file=sys.stderr)
                    return EXIT_USAGE
                print(f"[espnet3] create_dataset: {', '.join(p or 'dataset/' for p in prepared)}",
                      flush=True)
            elif name == "train_tokenizer" or (name == "train" and _needs_tokenizer(training, self.stages)):
                bpemodel, tokens = local.train_tokenizer(training)
                print(f"[espnet3] train_tokenizer: {bpemodel} and {tokens}", flush=True)
        if not self.ray_stages:
            return 0
        from espnet3 import launch as espnet3_launch
        from espnet3.storage import atomic_write

        header = ("# Written by espnet3 from the recipe's role configs "
                  f"({', '.join(str(c.path) for c in self.configs.values())}); edit those, not this file.\n")
        atomic_write(self.config_path, header + yaml.safe_dump(self.train_yaml, sort_keys=False), upload=False)
        code = espnet3_launch.main(self.launch_argv())
        if code == 0 and {"infer", "measure"} & set(self.ray_stages) and "inference" in self.configs:
            from espnet3.recipe.outputs import publish

            inference_dir = publish(self.configs["inference"], self.configs.get("metrics"),
                                    Path(self.train_yaml["exp_dir"]), recipe_dir)
            print(f"[espnet3] inference outputs and scores, in upstream's layout -> {inference_dir}", flush=True)
        return code


def _needs_tokenizer(training: RoleConfig, stages: Sequence[str]) -> bool:
    """Upstream's ``train`` trains a missing tokenizer first; so does this front end."""
    from espnet3.recipe.stages import tokenizer_files

    files = tokenizer_files(training)
    return "train_tokenizer" not in stages and files is not None and not all(f.is_file() for f in files)


def _has_gpu(training: RoleConfig) -> bool:
    accelerator = str((training.values.get("trainer") or {}).get("accelerator") or "auto")
    if accelerator in ("cpu",):
        return False
    import torch

    return torch.cuda.is_available() or accelerator in ("gpu", "cuda")
