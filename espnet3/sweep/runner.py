"""``python -m espnet3.launch --sweep FILE``: one Ray Tune experiment over a sweep file.

The corpus, token list and feature statistics are prepared once, in the launching
process, so concurrent trials never race to write them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from espnet3 import storage
from espnet3.orchestration.launch_spec import LaunchSpec
from espnet3.orchestration.slurm import SLURM_DIR
from espnet3.driver.signals import EXIT_TERMINATED, SIGTERM_RECEIVED
from espnet3.errors import SweepError
from espnet3.sweep.spec import SweepSpec
from espnet3.sweep.trial import TRIAL_CPUS, TrialPlan, run_trial, trial_dirname

# Paths derived from exp_dir that trials share instead of deriving from their own exp_dir.
SHARED_KEYS = ("stats_dir", "data.token_list", "data.bpemodel")


def preflight(spec: LaunchSpec) -> SweepSpec:
    """Parse and check the sweep before Ray starts (the launcher's exit-code-2 errors)."""
    sweep = SweepSpec.from_file(spec.sweep, spec.overrides)
    gpus = sweep.max_concurrent_trials * sweep.gpus_per_trial
    if spec.use_gpu and gpus > spec.num_gpus:
        raise SweepError(
            "max_concurrent_trials", sweep.source,
            f"{sweep.max_concurrent_trials} trials x gpus_per_trial {sweep.gpus_per_trial} = {gpus} GPUs, "
            f"but --num-gpus is {spec.num_gpus}",
            "lower max_concurrent_trials or gpus_per_trial, or raise --num-gpus",
        )
    out = storage.home(sweep.output_dir)
    if storage.is_uri(out) and (problem := storage.check_reachable(out)) is not None:
        raise SweepError("output_dir", sweep.source, problem, "fix `output_dir` or the storage settings")
    # The job files of a `--slurm` submission come first (slurm/); anything else is a sweep.
    if set(storage.listdir(out)) - {SLURM_DIR} and not spec.resume:
        raise FileExistsError(
            f"{out} already holds a sweep. Pass --resume to continue it (finished trials are not repeated), "
            f"or start a new one by changing `name` (or `output_dir`) in {sweep.source}."
        )
    return sweep


def trial_launch(sweep: SweepSpec, spec: LaunchSpec) -> LaunchSpec:
    return LaunchSpec(
        sweep=sweep.source,
        num_gpus=sweep.gpus_per_trial if spec.use_gpu else 0,
        num_workers=sweep.workers_per_trial,
        min_workers=sweep.min_per_trial.get("gpus_per_trial" if spec.use_gpu else "workers_per_trial"),
        cpus_per_worker=sweep.cpus_per_worker,
        address=spec.address,
        stages=["train"],
    )


def shared_config(sweep: SweepSpec, use_gpu: bool) -> DictConfig:
    """The base config with absolute paths, GPU batches on GPU trials (``dataloader.gpu``) and the
    derived files pinned to ``output_dir/shared``."""
    from espnet3.config.gpu_batches import apply_gpu_batches
    from espnet3.orchestration.preparation import absolutize, localize

    cfg = OmegaConf.create(OmegaConf.to_container(sweep.base, resolve=False))
    cfg.exp_dir = str((sweep.output_dir / "shared").resolve())
    absolutize(cfg)
    localize(cfg, sweep.source)  # data in object storage
    for note in apply_gpu_batches(cfg, use_gpu, sweep.source):
        print(f"[espnet3] GPU batches: {note}", flush=True)
    for key in SHARED_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is not None:
            OmegaConf.update(cfg, key, str(value))
    return cfg


def trial_cpus(launch: LaunchSpec) -> float:
    """CPUs one running trial takes: its workers' and the trial function's own."""
    return TRIAL_CPUS + launch.world_size * launch.cpus_per_worker


def check_cluster_fits(sweep: SweepSpec, launch: LaunchSpec) -> None:
    import ray

    have = ray.cluster_resources()
    per_trial = trial_cpus(launch)
    need = sweep.max_concurrent_trials * per_trial
    if need > have.get("CPU", 0):
        raise SweepError(
            "max_concurrent_trials", sweep.source,
            f"{sweep.max_concurrent_trials} trials x ({TRIAL_CPUS} for the trial + {launch.world_size} workers x "
            f"cpus_per_worker {launch.cpus_per_worker}) = {need:g} CPUs, but the cluster has {have.get('CPU', 0):g}",
            "lower max_concurrent_trials, workers_per_trial or cpus_per_worker, or add nodes",
        )
    gpus = sweep.max_concurrent_trials * launch.world_size if launch.use_gpu else 0
    if gpus > have.get("GPU", 0):
        raise SweepError(
            "max_concurrent_trials", sweep.source,
            f"{gpus} GPUs needed at once, but the cluster has {have.get('GPU', 0):g}",
            "lower max_concurrent_trials or gpus_per_trial, or add GPU nodes",
        )


def build_tuner(sweep: SweepSpec, plan: TrialPlan, resume: bool):
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), {"CPU": TRIAL_CPUS})
    # Tune keeps its experiment state and trial results where the sweep lives (a bucket too).
    fs, path = storage.filesystem(storage.home(sweep.output_dir))
    if resume and tune.Tuner.can_restore(path, storage_filesystem=fs):
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=False, storage_filesystem=fs)
    scheduler = None
    if sweep.scheduler:
        from ray.tune.schedulers import ASHAScheduler

        asha = sweep.scheduler
        scheduler = ASHAScheduler(
            time_attr=sweep.time_attr, max_t=asha.max_t,
            grace_period=asha.grace_period, reduction_factor=asha.reduction_factor,
        )
    # Tune applies max_concurrent_trials to a Searcher (Optuna) but ignores it for the
    # variant generator, which takes it itself.
    limit = sweep.max_concurrent_trials
    if sweep.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=sweep.seed)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search_alg, limit = BasicVariantGenerator(random_state=sweep.seed, max_concurrent=limit), None
    return tune.Tuner(
        trainable,
        param_space={d.path: d.to_tune() for d in sweep.space},
        tune_config=tune.TuneConfig(
            metric=sweep.metric, mode=sweep.mode, search_alg=search_alg, scheduler=scheduler,
            num_samples=sweep.num_samples, max_concurrent_trials=limit,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(name=Path(path).name, storage_path=str(Path(path).parent), storage_filesystem=fs,
                                  verbose=1),
    )


def report(grid, sweep: SweepSpec) -> int:
    from espnet3.config.save import save_config
    from espnet3.orchestration.preparation import absolutize
    from espnet3.sweep.results import format_table, plot_metric, trial_rows, write_csv
    from espnet3.sweep.space import apply_params

    out = sweep.output_dir  # written through to the bucket when it is a local copy
    rows = trial_rows(grid, sweep)
    write_csv(rows, sweep, out / "results.csv")
    plot_metric(grid, sweep, out / "metric.png")
    print(format_table(rows, sweep), flush=True)
    scored = [r for r in rows if r.best is not None]
    if not scored:
        print(f"[espnet3] no trial reported {sweep.metric}; results in {storage.home(out)}", file=sys.stderr)
        return 1
    best = (min if sweep.mode == "min" else max)(scored, key=lambda r: r.best)
    name = f"{sweep.name}_best"
    cfg = apply_params(sweep.base, sweep.space, best.params, sweep.source, name=name, exp_dir=f"exp/{name}")
    absolutize(cfg)  # best.yaml is resolved: relative paths would break in Ray workers
    best_file = save_config(cfg, out / "best.yaml")
    print(f"[espnet3] best trial {best.trial_id}: {sweep.metric} {best.best:.4f}; train it with "
          f"python -m espnet3.launch --config {best_file}", flush=True)
    print(f"[espnet3] sweep results in {storage.home(out)}", flush=True)
    return 0


def run(spec: LaunchSpec, sweep: SweepSpec) -> int:
    from espnet3.driver.pipeline import prepare
    from espnet3.orchestration.cluster import connect
    from espnet3.orchestration.console import LOG_DIR
    from espnet3.orchestration.preemption import disarm, start_board
    from espnet3.orchestration.preparation import default_stages
    from espnet3.orchestration.slurm import record_requeue
    from espnet3.utils.code_dir import recipe_code

    launch = trial_launch(sweep, spec)
    print(f"[espnet3] {sweep.summary()}\n  each trial: {launch.world_size} {'GPU' if launch.use_gpu else 'CPU'} "
          f"worker(s) x {launch.cpus_per_worker} CPU", flush=True)
    if spec.dry_run:
        return 0
    cfg = shared_config(sweep, launch.use_gpu)

    def join() -> None:
        connect(launch, sweep.max_concurrent_trials, recipe_code=recipe_code(cfg, sweep.config_dir),
                log_dir=sweep.output_dir / LOG_DIR)
        check_cluster_fits(sweep, launch)

    # Once here, not in every trial: the data, the statistics, the model, its optimizers and the
    # criteria it is ranked by.
    stages = [s for s in default_stages(cfg) if s in ("collect_stats", "train")]
    data_plan = prepare(cfg, stages, source=sweep.source, config_dir=sweep.config_dir, connect=join)
    record_requeue(sweep.output_dir)
    board = start_board()
    plan = TrialPlan(
        base=OmegaConf.to_container(cfg, resolve=False), space=sweep.space, source=sweep.source,
        trials_dir=(sweep.output_dir / "trials").resolve(), launch=launch, config_dir=sweep.config_dir,
        data=data_plan, storage_env=storage.worker_env(), stop_board=board,
    )
    threading.Thread(target=_interrupt_when_settled, args=(board,), name="espnet3-sweep-stop", daemon=True).start()
    try:
        with storage.uploading([sweep.output_dir / LOG_DIR]):
            grid = build_tuner(sweep, plan, spec.resume).fit()
    finally:
        disarm()
    if SIGTERM_RECEIVED.is_set():
        print("[espnet3] stopped by SIGTERM: every running trial checkpointed at its step and stays unfinished; "
              "continue with the same command and --resume", file=sys.stderr, flush=True)
        return EXIT_TERMINATED
    return report(grid, sweep)


def _interrupt_when_settled(board) -> None:
    """After a SIGTERM (the launcher's handler asks ``board``), once every running trial has its
    checkpoint: Tune's own interrupt (SIGINT), which saves the experiment with those trials
    unfinished, so that ``--resume`` continues each one from that checkpoint."""
    import ray

    SIGTERM_RECEIVED.wait()
    while True:
        try:
            if ray.get(board.settled.remote(), timeout=30):
                break
        except Exception:  # Ray is shutting down: the sweep is over anyway
            return
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGINT)
