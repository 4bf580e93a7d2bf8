"""``python -m espnet3.launch``: run a train.yaml (or a sweep) on a Ray cluster.

Everything that can be checked is checked here, before a Ray worker starts: the
config, the launch options, the run directory and the model itself.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from espnet3.orchestration.launch_spec import STAGE_ALIASES, STAGES, LaunchSpec, parse_size

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TERMINATED = 128 + signal.SIGTERM
DEBUG_ENV = "ESPNET3_DEBUG"


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, ``timeout``): stop, keep what is saved, exit quietly.

    A KeyboardInterrupt: no ``except Exception`` on the way up swallows it, and Ray's blocking calls
    (``ray.get`` of the Train controller, where the driver waits) let only KeyboardInterrupt and
    SystemExit out of a signal handler, turning any other exception into a SystemError. Ray raises
    its own KeyboardInterrupt there, so which signal it was is kept in :data:`SIGTERM_RECEIVED`.
    """


SIGTERM_RECEIVED = threading.Event()
# How long a SIGTERM during training waits for every rank to checkpoint before stopping anyway.
STOP_GRACE_S = 120.0


def _terminate(signum, frame) -> None:
    from espnet3.orchestration.preemption import armed

    board = armed()
    if board is not None and not SIGTERM_RECEIVED.is_set():
        SIGTERM_RECEIVED.set()
        board.ask.remote("SIGTERM")
        print(f"[espnet3] SIGTERM: every rank checkpoints at its next step, then the run stops (within "
              f"{STOP_GRACE_S:.0f} s; another SIGTERM stops at once)", file=sys.stderr, flush=True)
        timer = threading.Timer(STOP_GRACE_S, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()
        return
    SIGTERM_RECEIVED.set()
    raise Terminated()


def stop_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` (again after ``ray.init``, whose core worker installs
    a C++ handler that dumps stack traces)."""
    signal.signal(signal.SIGTERM, _terminate)


def _is_override(word: str) -> bool:
    """``a.b=1``, ``+a=1``, ``~a``: a config override (Hydra's forms), not a stage name."""
    return "=" in word or word.startswith(("+", "~"))


def parse_args(argv: list[str] | None = None) -> LaunchSpec:
    parser = argparse.ArgumentParser(
        prog="python -m espnet3.launch",
        description="Train an ESPnet model from a train.yaml on Ray (local machine or cluster).",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--config", type=Path, help="train.yaml to run")
    target.add_argument("--sweep", type=Path, help="sweep file: a Ray Tune search over a train.yaml (docs/sweep_yaml.md)")
    parser.add_argument("--num-gpus", default="0", help="N>0: N workers with one GPU each (nccl); MIN-MAX: an elastic "
                        "group that starts with MIN and grows to MAX as nodes join; 0: CPU workers (gloo)")
    parser.add_argument("--num-workers", default="2", help="CPU workers when --num-gpus 0 (default 2; MIN-MAX: elastic)")
    parser.add_argument(
        "--cpus-per-worker", type=float, default=None,
        help="CPUs (and torch threads) per worker (default: 1 per CPU worker; per GPU worker, the "
        "machine's CPUs shared among the GPUs, at most 8)",
    )
    parser.add_argument("--address", default=None, help="Ray cluster address (auto, ray://host:10001); default: RAY_ADDRESS or a new local cluster")
    parser.add_argument("--stages", nargs="+", default=None, metavar="STAGE",
                        help=f"any of {', '.join([*STAGES, *STAGE_ALIASES])}; default: collect_stats (when a "
                        "global_mvn layer needs statistics), train, infer and measure (when data.test is set); "
                        "evaluate = infer measure")
    parser.add_argument("--resume", action="store_true", help="continue the run already in exp_dir (with --sweep: the sweep in output_dir)")
    parser.add_argument("--dry-run", action="store_true", help="validate the config and print the plan; start nothing")
    parser.add_argument("--slurm", default=None, metavar="KEY=VALUE,...",
                        help="submit as a SLURM job (partition, time, nodes, gpus_per_node, cpus_per_node, account, "
                        "qos, mem, signal_s, max_requeues): checkpoint and requeue at walltime (README, SLURM)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Python tracebacks of configuration and training errors (also ESPNET3_DEBUG=1)")
    parser.add_argument("overrides", nargs="*", help="config overrides: a.b=value, +new.key=value (anywhere)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_intermixed_args(argv)
    # `--stages train exp_dir=/x`: nargs="+" takes the overrides after the stages too.
    stages = [s for s in args.stages or [] if not _is_override(s)]
    args.overrides = [*(s for s in args.stages or [] if _is_override(s)), *args.overrides]
    for stage in stages:
        if stage not in (*STAGES, *STAGE_ALIASES):
            parser.error(f"argument --stages: invalid choice: {stage!r} (choose from {', '.join([*STAGES, *STAGE_ALIASES])})")
    args.stages = stages
    try:
        from espnet3.orchestration.slurm import SlurmSpec, without_option

        slurm = SlurmSpec.parse(args.slurm) if args.slurm is not None else None
        gpus = parse_size(args.num_gpus, "--num-gpus")
        workers = parse_size(args.num_workers, "--num-workers")
        elastic = gpus if gpus[1] > 0 else workers
        return LaunchSpec(
            config=args.config,
            sweep=args.sweep,
            num_gpus=gpus[1],
            num_workers=workers[1],
            min_workers=elastic[0] if elastic[0] != elastic[1] else None,
            cpus_per_worker=args.cpus_per_worker,
            address=args.address,
            stages=args.stages or [],
            resume=args.resume,
            dry_run=args.dry_run,
            verbose=args.verbose or bool(os.environ.get(DEBUG_ENV)),
            overrides=list(args.overrides),
            slurm=slurm,
            argv=without_option(argv, "--slurm"),
        )
    except ValueError as exc:
        parser.error(str(exc))


def submit_slurm(spec: LaunchSpec, checked) -> int:
    """``--slurm``: the launch, checked here, submitted as a self-requeueing sbatch job (nothing runs here)."""
    from espnet3 import storage
    from espnet3.config.errors import ConfigError
    from espnet3.orchestration import slurm
    from espnet3.storage import atomic_write

    run_dir = storage.home(checked.exp_dir if spec.config is not None else checked.output_dir)
    # SLURM writes the job's output to a path: a run in a bucket keeps its job files here.
    local = Path.cwd() / slurm.SLURM_DIR / Path(run_dir).name if storage.is_uri(run_dir) else Path(run_dir)
    # The workers of the busiest node (a sweep's: all its concurrent trials'), and one CPU for the driver.
    if spec.config is not None:
        cpus = 1 + math.ceil(math.ceil(spec.world_size / spec.slurm.nodes) * spec.cpus_per_worker)
    else:
        from espnet3.sweep.runner import trial_cpus, trial_launch

        cpus = 1 + math.ceil(checked.max_concurrent_trials * trial_cpus(trial_launch(checked, spec)) / spec.slurm.nodes)
    try:
        spec.slurm.check(spec.num_gpus, cpus)
        script = atomic_write(local / slurm.SCRIPT, spec.slurm.script(spec.argv, str(local), str(checked.name or "sweep"), cpus))
        script.chmod(0o755)
        if spec.dry_run:
            print(f"[espnet3] wrote {script}; not submitted (--dry-run)", flush=True)
            return 0
        job = slurm.submit(script)
    except ValueError as exc:
        raise ConfigError("--slurm", "the command line", str(exc).removeprefix("--slurm: "), None) from None
    if spec.config is not None:  # a sweep's output_dir must stay empty until the job starts it
        from espnet3.orchestration.status import submitted

        submitted(local, job)
    print(f"[espnet3] submitted SLURM job {job}: {script}; its output -> {slurm.output_file(local, job)}", flush=True)
    return 0


def check_run_dir(cfg: DictConfig, spec: LaunchSpec) -> None:
    from espnet3 import storage
    from espnet3.orchestration.provenance import RUN_FILE

    run_file = storage.home(Path(cfg.exp_dir) / RUN_FILE)
    if "train" in spec.stages and not spec.resume and storage.exists(run_file):
        raise FileExistsError(
            f"{storage.home(cfg.exp_dir)} already holds a run (see {run_file}). Ray Train would silently resume it: "
            "pass --resume to continue it, or start a new one with `name=<new name>` (or `exp_dir=...`)."
        )


def check_gpus(spec: LaunchSpec) -> None:
    """On a machine where espnet3 starts the cluster itself, ask for no more GPUs than it has.

    Ray would otherwise wait for them forever (a joined cluster may still add nodes: there the
    wait is bounded by ``timeouts.worker_start_s`` instead).
    """
    from espnet3.config.errors import ConfigError
    from espnet3.orchestration.cluster import running_local_cluster

    if not spec.use_gpu or spec.address or os.environ.get("RAY_ADDRESS") or running_local_cluster():
        return
    import torch

    available = torch.cuda.device_count()
    if spec.num_gpus > available:
        raise ConfigError(
            "--num-gpus", "the command line", f"asks for {spec.num_gpus} GPU worker(s), but this machine has "
            f"{available} GPU(s) and espnet3 would start a single-machine Ray cluster",
            f"use --num-gpus {available}" if available else "use --num-gpus 0 (CPU workers), or join a GPU "
            "cluster with --address",
        )


def check_workers(cfg: DictConfig, spec: LaunchSpec) -> None:
    """The training strategy against the launch options (FSDP needs GPU workers)."""
    from espnet3.config.errors import ConfigError
    from espnet3.orchestration.train_spec import TrainSpec

    try:
        TrainSpec.from_config(OmegaConf.to_container(cfg, resolve=True)).strategy.check_workers(spec.use_gpu)
    except ValueError as err:
        raise ConfigError.from_spec_error(err, spec.config) from None


def preflight(spec: LaunchSpec) -> DictConfig:
    from espnet3.config.gpu_batches import apply_gpu_batches
    from espnet3.config.loader import load_config
    from espnet3.config.preflight import check_config
    from espnet3.orchestration.preparation import absolutize, default_stages, localize
    from espnet3.utils.task_utils import config_code_dir, make_importable

    cfg = load_config(spec.config, spec.overrides)
    absolutize(cfg)
    localize(cfg, spec.config)
    for note in apply_gpu_batches(cfg, spec.use_gpu, spec.config):
        print(f"[espnet3] GPU batches: {note}", flush=True)
    spec.stages = spec.stages or default_stages(cfg)
    check_run_dir(cfg, spec)
    check_gpus(spec)
    make_importable(config_code_dir(spec.config))  # a model `_target_` in the recipe's src/
    check_config(OmegaConf.to_container(cfg, resolve=True), spec.config)
    if "train" in spec.stages:
        check_workers(cfg, spec)
    if "pack" in spec.stages and not cfg.get("task"):
        from espnet3.config.errors import ConfigError

        raise ConfigError(
            "task", spec.config, "the pack stage ships an ESPnet2 task model (config.yaml + .pth), and a "
            "`model._target_` model has no ESPnet2 task", "leave `pack` out of --stages",
        )
    if {"infer", "measure", "pack"} & set(spec.stages) or cfg.get("inference") or cfg.get("metrics"):
        # Checked now, not after training; a block written but not run this time is checked too,
        # so its typo is found before the run that needs it.
        evaluation_plan(cfg, spec.config)
    return cfg


def evaluation_plan(cfg: DictConfig, source: Path | None = None):
    from espnet3.config.preflight import check_evaluation

    return check_evaluation(OmegaConf.to_container(cfg, resolve=True), default_model(cfg), source)


def default_model(cfg: DictConfig) -> Path:
    """The model evaluation and packing use unless told otherwise: the first criterion's average."""
    from espnet3.orchestration.criteria import parse_criteria

    return Path(cfg.exp_dir) / parse_criteria(cfg.best_model_criterion)[0].averaged_name


def run(spec: LaunchSpec, cfg: DictConfig) -> int:
    from espnet3.orchestration.preparation import fetch_run_files
    from espnet3.utils.task_utils import config_code_dir

    from espnet3 import storage

    config_dir = config_code_dir(spec.config)
    print(
        f"[espnet3] {cfg.name}: stages {' '.join(spec.stages)}; {spec.size_text()} "
        f"{'GPU' if spec.use_gpu else 'CPU'} worker(s); exp_dir {storage.home(cfg.exp_dir)}",
        flush=True,
    )
    if spec.dry_run:
        print(OmegaConf.to_yaml(cfg, resolve=True))
        return 0

    exp_dir = Path(cfg.exp_dir)
    fetch_run_files(cfg, fresh="train" in spec.stages and not spec.resume)
    from espnet3.orchestration.status import RunStatus

    status = RunStatus(exp_dir, spec.stages)
    try:
        code = _run_stages(spec, cfg, config_dir, exp_dir, status)
        status.update(state="finished", stage=None)
        return code
    except BaseException as exc:
        status.update(state="stopped" if isinstance(exc, KeyboardInterrupt) else "failed",
                      error=f"{type(exc).__name__}: {str(exc)[:500]}")
        raise
    finally:
        from espnet3.orchestration.console import DRIVER_LOG, LOG_DIR

        if (exp_dir / LOG_DIR / DRIVER_LOG).is_file():
            storage.push(exp_dir / LOG_DIR / DRIVER_LOG)


def _run_stages(spec: LaunchSpec, cfg: DictConfig, config_dir: Path, exp_dir: Path, status) -> int:
    from espnet3 import storage
    from espnet3.config.loader import save_config
    from espnet3.config.preflight import check_trainable, settle_criteria
    from espnet3.orchestration.preparation import prepare_data, splits_for, stats_model
    from espnet3.utils.task_utils import build_model, recipe_code

    plan = prepare_data(cfg, spec.stages)
    splits = splits_for(cfg, spec.stages)
    # Small splits are measured here, before Ray starts, so that an item that cannot be
    # loaded is reported like any other data error; large ones below, as Ray tasks.
    plan.prepare_shapes(splits, parallel=False, defer_large=True)
    from espnet3.orchestration.cluster import connect
    from espnet3.stages.collect_stats import collect_stats, model_config_for_stats
    from espnet3.orchestration.console import LOG_DIR

    plain = OmegaConf.to_container(cfg, resolve=True)
    if set(spec.stages) != {"pack"}:  # packing reads files only: no cluster needed
        # The model, its Lightning module and its optimizers are built once here, before Ray
        # starts, so that a bad model block is one clear error (ESPnet2's imports, the slow
        # part, already happened while the data was prepared). A model normalised with the
        # statistics collect_stats is about to write is checked without them first.
        pending_stats = "collect_stats" in spec.stages
        factory, model_cfg = stats_model(cfg, plan)
        module = check_trainable(
            plain,
            (lambda: factory(model_config_for_stats(model_cfg))) if pending_stats else
            (lambda: build_model(cfg, config_dir, plan)),
            spec.config,
        )
        if "train" in spec.stages and settle_criteria(cfg, module, plan, spec.config):
            plain = OmegaConf.to_container(cfg, resolve=True)
        connect(spec, recipe_code=recipe_code(cfg, config_dir), log_dir=exp_dir / LOG_DIR)
        stop_on_sigterm()
        plan.prepare_shapes(splits, parallel=True)
        if pending_stats:
            status.stage("collect_stats")
            stats_dir = collect_stats(factory, model_cfg, plan)
            print(f"[espnet3] feature statistics -> {stats_dir}", flush=True)
            check_trainable(plain, lambda: build_model(cfg, config_dir, plan), spec.config)
    save_config(cfg, exp_dir / "train.yaml")
    if "train" in spec.stages:
        from espnet3.orchestration.preemption import start_board
        from espnet3.orchestration.provenance import write_run_file
        from espnet3.orchestration.slurm import record_requeue
        from espnet3.stages.train import run_train

        write_run_file(exp_dir, spec)
        record_requeue(exp_dir)
        status.stage("train")
        run_train(cfg, spec, config_dir, plan, stop_board=start_board(), status=status)
    if {"infer", "measure"} & set(spec.stages):
        status.stage("evaluate")
        run_evaluation(spec, evaluation_plan(cfg), plan)
    if "pack" in spec.stages:
        status.stage("pack")
        from espnet3.stages.pack import pack

        evaluation = evaluation_plan(cfg)
        packed = pack(evaluation.model, evaluation.system.packed_as, exp_dir, cfg.name, plan.token_streams)
        print(f"[espnet3] packed {evaluation.model.model_file.name} -> {storage.home(packed)}", flush=True)
    from espnet3.orchestration.extensions import TENSORBOARD_DIR

    print(f"[espnet3] results in {storage.home(exp_dir)} (tensorboard --logdir "
          f"{storage.home(exp_dir / TENSORBOARD_DIR)})", flush=True)
    return 0


def run_evaluation(spec: LaunchSpec, evaluation, plan) -> None:
    """The infer stage over every test split, then the measure stage and its table."""
    tests = list(plan.data.test)
    if "infer" in spec.stages:
        from espnet3.stages.infer import infer

        evaluation.check_model()
        infer(
            plan,
            evaluation.system.inference_class(),
            evaluation.model,
            evaluation.inference,
            evaluation.infer_dir,
            splits=tests,
            num_workers=evaluation.inference.num_workers or spec.world_size,
            use_gpu=spec.use_gpu,
            cpus_per_worker=spec.cpus_per_worker,
        )
    if "measure" in spec.stages:
        from espnet3.stages.measure import format_table, measure

        scores = measure(plan, evaluation.metrics(), evaluation.infer_dir, tests)
        print(format_table(scores, f"Scores of {evaluation.model.model_file} -> {evaluation.infer_dir}"), flush=True)


def describe_failure(error: BaseException) -> str:
    """One line per distinct worker error of a failed Ray Train run (tracebacks are in the logs)."""
    from espnet3.orchestration.failures import describe_memory_kill, is_startup_timeout, memory_kill

    memory = memory_kill(error)
    if memory is not None:
        return describe_memory_kill(memory)
    if is_startup_timeout(error):
        return (
            "the training workers could not be placed within timeouts.worker_start_s: the cluster lacks the "
            "GPUs/CPUs asked for (--num-gpus, --num-workers x --cpus-per-worker); add nodes or ask for less"
        )
    failures = getattr(error, "worker_failures", None) or {}
    lines = {}
    for rank, failure in sorted(failures.items()):
        text = f"{type(failure).__name__}: {str(failure).strip().splitlines()[-1] if str(failure).strip() else ''}"
        lines.setdefault(text, []).append(rank)
    if not lines:
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
    return "\n".join(f"rank(s) {', '.join(map(str, ranks))}: {text}" for text, ranks in lines.items())


def main(argv: list[str] | None = None) -> int:
    from espnet3.utils.quiet import silence_library_noise

    silence_library_noise()
    spec = parse_args(argv)
    from espnet3.config.errors import ConfigError
    from espnet3.data.errors import DataError

    if spec.sweep is not None:
        from espnet3.sweep import runner

        check, execute = runner.preflight, runner.run
    else:
        check, execute = preflight, run
    if spec.slurm is not None:
        execute = submit_slurm
    from ray.exceptions import OutOfMemoryError
    from ray.train import TrainingFailedError

    stop_on_sigterm()
    try:
        return execute(spec, check(spec))
    except (ConfigError, DataError, FileExistsError, FileNotFoundError) as exc:
        if spec.verbose:
            raise
        print(f"espnet3.launch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TrainingFailedError, OutOfMemoryError) as exc:
        from espnet3.orchestration.failures import is_requested_stop

        if is_requested_stop(exc):  # SIGTERM, and every rank checkpointed at its next step
            print("[espnet3] stopped by SIGTERM after a checkpoint at the step it arrived; continue with the same "
                  "command and --resume", file=sys.stderr, flush=True)
            return EXIT_TERMINATED
        if spec.verbose:
            raise
        print(f"espnet3.launch: training failed:\n{describe_failure(exc)}\n(--verbose or {DEBUG_ENV}=1 for "
              "tracebacks)", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:  # Ctrl-C, and SIGTERM as Terminated
        import ray

        ray.shutdown()
        sigterm = isinstance(exc, Terminated) or SIGTERM_RECEIVED.is_set()
        print(f"[espnet3] stopped by {'SIGTERM' if sigterm else 'Ctrl-C'}; what was saved stays: continue with "
              "the same command and --resume", file=sys.stderr, flush=True)
        return EXIT_TERMINATED if sigterm else 130


if __name__ == "__main__":
    sys.exit(main())
