"""One run of a train.yaml: its stages in order, from the data to the packed model."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from espnet3 import storage
from espnet3.driver.preflight import evaluation_plan
from espnet3.orchestration.launch_spec import LaunchSpec


def run(spec: LaunchSpec, cfg: DictConfig) -> int:
    """The run's stages, with its status file kept (``python -m espnet3.status``)."""
    from espnet3.orchestration.preparation import fetch_run_files
    from espnet3.orchestration.status import RunStatus
    from espnet3.utils.code_dir import config_code_dir

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
    status = RunStatus(exp_dir, spec.stages)
    try:
        code = run_stages(spec, cfg, config_dir, exp_dir, status)
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


def run_stages(spec: LaunchSpec, cfg: DictConfig, config_dir: Path, exp_dir: Path, status) -> int:
    """Prepare (:func:`espnet3.driver.pipeline.prepare`), then train, evaluate and pack as asked."""
    from espnet3.config.loader import save_config
    from espnet3.driver.pipeline import prepare
    from espnet3.orchestration.cluster import connect
    from espnet3.orchestration.console import LOG_DIR
    from espnet3.utils.code_dir import recipe_code

    def join() -> None:
        connect(spec, recipe_code=recipe_code(cfg, config_dir), log_dir=exp_dir / LOG_DIR)

    plan = prepare(cfg, spec.stages, source=spec.config, config_dir=config_dir,
                   connect=None if set(spec.stages) == {"pack"} else join, on_stage=status.stage)
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
    # Built once for the stages after training (preflight only checked it): infer, measure and pack share it.
    evaluation = evaluation_plan(cfg) if {"infer", "measure", "pack"} & set(spec.stages) else None
    if {"infer", "measure"} & set(spec.stages):
        status.stage("evaluate")
        run_evaluation(spec, evaluation, plan)
    if "pack" in spec.stages:
        status.stage("pack")
        from espnet3.stages.pack import pack

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
