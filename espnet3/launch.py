"""``python -m espnet3.launch``: run a train.yaml (or a sweep) on a Ray cluster.

The command line: its options become a :class:`LaunchSpec`; :mod:`espnet3.driver` checks the
run before a Ray worker starts and drives its stages (:mod:`espnet3.sweep.runner` a sweep's);
errors become exit codes here (2: a bad input, naming the key or file and the fix).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from espnet3.driver.signals import (EXIT_FAILED, EXIT_TERMINATED, EXIT_USAGE, SIGTERM_RECEIVED, Terminated,
                                    stop_on_sigterm)
from espnet3.orchestration.launch_spec import STAGE_ALIASES, STAGES, LaunchSpec, parse_size

DEBUG_ENV = "ESPNET3_DEBUG"


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
    from espnet3.errors import ConfigError
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
    from espnet3.errors import ConfigError, DataError

    if spec.sweep is not None:
        from espnet3.sweep import runner

        check, execute = runner.preflight, runner.run
    else:
        from espnet3.driver.preflight import preflight
        from espnet3.driver.run import run

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
