"""One espnet3 training run on Ray Train, through espnet3's own launcher code path, with timing probes.

    python -m benchmarks.espnet3_side --config bench.yaml --exp-dir D --out O --num-workers 2 \
        --max-steps 20 [--override KEY=VALUE ...] [--num-gpus N] [--consensus on|off|alternate] [--address HOST:PORT] [--t0 WALLCLOCK]

Mirrors ``espnet3.driver.run.run`` for ``--stages train`` (preflight, prepare_data, connect, the
driver-side model build, ``build_torch_trainer(...).fit()``); the only change is that the
TorchTrainer runs :func:`benchmarks.probes.bench_train_loop`, which calls espnet3's
``train_loop_per_worker`` with a StepTimer added. Writes ``O/driver.json`` (driver phase marks)
and ``O/rank<r>.json`` (per-step timings of each worker).
"""

from __future__ import annotations

import time

T_MAIN = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--exp-dir", required=True, help="a path or an object-store URI (s3://...)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--num-gpus", type=int, default=0, help="GPU workers (then --num-workers is ignored)")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--consensus", default="on", choices=("on", "off", "alternate"))
    parser.add_argument("--collective-calls", type=int, default=0)
    parser.add_argument("--address", default=None)
    parser.add_argument("--override", action="append", default=[], help="a train.yaml override (repeatable)")
    parser.add_argument("--t0", type=float, default=None, help="wall clock at process start (from the parent)")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # Ray workers do not run in this directory
    marks = {"process_start": args.t0 or T_MAIN, "main": T_MAIN}

    from espnet3.driver.preflight import preflight
    from espnet3.orchestration.preparation import prepare_data
    from espnet3.orchestration.cluster import connect
    from espnet3.orchestration.launch_spec import LaunchSpec
    from espnet3.stages.train import build_torch_trainer
    from espnet3.utils.quiet import silence_library_noise
    from espnet3.utils.code_dir import config_code_dir
    from espnet3.utils.task_utils import build_model

    silence_library_noise()
    marks["driver_imports_done"] = time.time()
    spec = LaunchSpec(
        config=args.config,
        num_workers=args.num_workers,
        num_gpus=args.num_gpus,
        address=args.address,
        stages=["train"],
        overrides=[f"exp_dir={args.exp_dir}", f"trainer.max_steps={args.max_steps}", *args.override],
    )
    cfg = preflight(spec)
    config_dir = config_code_dir(spec.config)
    plan = prepare_data(cfg, spec.stages)
    marks["preflight_done"] = time.time()
    connect(spec)
    marks["ray_init_done"] = time.time()
    build_model(cfg, config_dir, plan)  # espnet3.driver.run builds the model once on the driver, too
    marks["driver_model_built"] = time.time()
    trainer = build_torch_trainer(cfg, spec, config_dir, plan)
    from benchmarks.probes import bench_train_loop

    trainer.train_loop_per_worker = bench_train_loop
    trainer.train_loop_config["bench"] = {
        "out_dir": str(args.out),
        "consensus": args.consensus,
        "collective_calls": args.collective_calls,
    }
    marks["fit_called"] = time.time()
    trainer.fit()
    marks["fit_returned"] = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "driver.json").write_text(json.dumps({"marks": marks}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
