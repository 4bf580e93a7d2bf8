"""espnet3 against ESPnet2's own trainer on the same job: test CER/WER and training time per seed.

    python -m benchmarks.espnet2_parity exp/digits_asr_seed3 exp/digits_asr_seed4 exp/digits_asr_seed5

Each argument is a finished espnet3 run of an ASR config (``train.yaml``, ``config.yaml``,
``tokens.txt``, ``stats/``, ``infer/<test>/metrics.json``). For each, ESPnet2's trainer
(``espnet2.bin.asr_train``, one process) trains the same model (the run's ``config.yaml`` model and
preprocessing options) on the same data, token list, feature statistics and shape files, with the same
global batch (``batch_bins`` x the run's workers), optimizer, scheduler, clipping, epochs, seed and
best-checkpoint average; espnet3's own infer and measure stages then decode ESPnet2's averaged
model with the run's ``inference:`` options and metrics, so both sides share the decoder and the scoring.
Results: ``<out>/espnet2-parity-<date>.{json,md}``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import yaml

from benchmarks.fixture import REPO
from benchmarks.harness import RESULTS_DIR, bench_env, run_logged

RAY_TMPDIR = "/tmp/e3parity"  # a Ray of its own (benchmarks.harness uses /tmp/e3bench)
LOG = "train.log"
TIMES = "parity_times.json"
# ESPnet2's log lines: "[host] 2026-12-07 15:20:01,123 (trainer:334) INFO: 1/17epoch started".
STAMP = r"\] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \("


def _stamp(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _metrics(infer_dir: Path, splits) -> dict[str, dict]:
    return {s: json.loads((infer_dir / s / "metrics.json").read_text()) for s in splits}


def espnet3_side(run: Path, cfg) -> dict:
    """Scores and times of a finished espnet3 run, from its files (nothing is run)."""
    from espnet3.orchestration.pruning import read_reports

    reports = read_reports(run)
    if not reports or not (run / "train_result.json").is_file():
        raise SystemExit(f"{run}: no finished training (train_result.json, checkpoint_*/)")
    started = min(json.loads(p.read_text())["started"] for p in (run / "attempts").glob("*.json"))
    last = (run / reports[-1].name / "metrics.json").stat().st_mtime
    launched = datetime.datetime.fromisoformat(json.loads((run / "run.json").read_text())["launched_at"]).timestamp()
    return {
        "metrics": _metrics(run / "infer", cfg.data.test),
        "train_s": round(last - started, 1),  # workers' start to the last checkpoint (docs/performance.md's)
        "total_s": round((run / "train_result.json").stat().st_mtime - launched, 1),  # launch to averaged model
        "best_valid_loss": min(r.metrics["valid/loss"] for r in reports if "valid/loss" in r.metrics),
        "steps": int(json.loads((run / "train_result.json").read_text())["metrics"]["step"]),
    }


def workers(run: Path) -> tuple[int, float]:
    """(training workers, CPUs per worker) of the run's first attempt."""
    launch = json.loads((run / "run.json").read_text())["launch"]
    attempts = sorted((run / "attempts").glob("*.json"))
    size = json.loads(attempts[0].read_text())["world_size"] if attempts else launch["num_gpus"] or launch["num_workers"]
    return int(size), float(launch.get("cpus_per_worker") or 1.0)


def espnet2_config(run: Path, cfg, world_size: int) -> dict:
    """ESPnet2's --config: the run's model and preprocessing args, and its training options."""
    from espnet3.data.loader import LoaderSpec
    from espnet3.from_espnet2 import OPTIMIZERS, SCHEDULERS
    from espnet3.orchestration.criteria import parse_criteria
    from espnet3.utils.task_utils import model_keys, preprocess_keys, resolve_task

    task = resolve_task(cfg.task)
    if f"{task.__module__}.{task.__name__}" != "espnet2.tasks.asr.ASRTask":
        raise SystemExit(f"{run}: task {cfg.task} is not ASR; this benchmark trains with espnet2.bin.asr_train")
    args = yaml.safe_load((run / "config.yaml").read_text())
    out = {k: args[k] for k in (*model_keys(task), *preprocess_keys(task)) if k in args}
    out["token_list"] = str(run / "tokens.txt")
    for key, conf in out.items():  # global_mvn statistics: the run's own, also when the run was moved
        if key.endswith("_conf") and isinstance(conf, dict) and conf.get("stats_file"):
            if not Path(conf["stats_file"]).is_file():
                conf["stats_file"] = str(run / "stats" / "train" / Path(conf["stats_file"]).name)
    if cfg.get("optimizers") or cfg.scheduler_interval != "step" and cfg.scheduler is not None:
        raise SystemExit(f"{run}: only one optimizer with a per-step (or no) scheduler is mapped to ESPnet2")
    optim = {v: k for k, v in OPTIMIZERS.items()}[cfg.optimizer._target_]
    out.update(optim=optim, optim_conf={k: v for k, v in cfg.optimizer.items() if k != "_target_"})
    if cfg.scheduler is not None:
        name = next(k for k, v in SCHEDULERS.items() if v.target == cfg.scheduler._target_)
        out.update(scheduler=name, scheduler_conf={k: v for k, v in cfg.scheduler.items() if k != "_target_"})
    loader = LoaderSpec.from_config(cfg.dataloader)
    out.update(batch_type=loader.batch_type, sort_in_batch=loader.sort_in_batch, sort_batch=loader.sort_batch,
               min_batch_size=loader.min_batch_size, max_batch_size=loader.max_batch_size,
               drop_last_iter=loader.drop_last_iter, fold_length=list(loader.fold_length),
               # espnet3's are per worker, ESPnet2's the global batch
               batch_bins=loader.batch_bins * world_size, batch_size=loader.batch_size * world_size)
    criterion = parse_criteria(cfg.best_model_criterion)[0]
    clip = cfg.trainer.gradient_clip_val
    out.update(
        seed=int(cfg.seed), max_epoch=int(cfg.trainer.max_epochs), accum_grad=int(cfg.trainer.accumulate_grad_batches),
        grad_clip=float(clip) if clip else float("inf"),  # inf: the norm is measured, nothing clipped
        best_model_criterion=[[*criterion.metric.split("/", 1), criterion.mode]], keep_nbest_models=criterion.keep,
        ngpu=0, num_workers=0, use_tensorboard=False, use_matplotlib=False, num_att_plot=0,
    )
    return out


def train_espnet2(run: Path, cfg, exp: Path, retrain: bool, timeout: float, threads: int | None) -> dict:
    """Train with ESPnet2 into ``exp`` (kept when it finished with the same config, unless ``retrain``); its times."""
    from espnet3.data.sources import SplitSource
    from espnet3.orchestration.criteria import parse_criteria

    world_size, cpus = workers(run)
    log, config = exp / LOG, exp / "espnet2_train.yaml"
    conf = yaml.safe_dump(espnet2_config(run, cfg, world_size), sort_keys=False)
    finished = (log.is_file() and "The training was finished" in log.read_text() and (exp / TIMES).is_file()
                and config.is_file() and config.read_text() == conf)
    if retrain or not finished:
        exp.mkdir(parents=True, exist_ok=True)
        config.write_text(conf)
        cmd = [sys.executable, "-m", "espnet2.bin.asr_train", "--config", str(config),
               "--output_dir", str(exp)]
        for split in ("train", "valid"):
            source = SplitSource.parse(f"data.{split}", cfg.data[split]).resolved()
            if source.target is not None or source.shards is not None:
                raise SystemExit(f"{run}: data.{split} is not files ESPnet2 reads (a dataset class or shards)")
            for t in source.with_absolute_paths().triples:
                cmd += [f"--{split}_data_path_and_name_and_type", f"{t.path},{t.name},{t.type}",
                        f"--{split}_shape_file", str(Path(cfg.stats_dir) / split / f"{t.name}_shape")]
        threads = str(threads or max(1, round(world_size * cpus)))  # default: the CPUs espnet3's workers had
        env = dict(bench_env(), OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, RAY_TMPDIR=RAY_TMPDIR)
        print(f"[parity] {cfg.name}: ESPnet2 training ({threads} threads) -> {log}", flush=True)
        started = time.time()
        rc, _ = run_logged(cmd, log, env=env, timeout=timeout)
        if rc != 0:
            raise SystemExit(f"ESPnet2 training failed (exit {rc}); see {log}")
        (exp / TIMES).write_text(json.dumps({"total_s": round(time.time() - started, 1), "threads": int(threads)}))
    text = log.read_text()
    first = re.search(STAMP + r"[^\n]*\) INFO: 1/\d+epoch started", text)
    valid = [float(v) for v in re.findall(r"epoch results: .*?\[valid\][^\[]*?\bloss=([-\d.e+]+)", text)]
    steps = re.findall(r"epoch results: \[train\][^\[]*?\btotal_count=(\d+)", text)
    criterion = parse_criteria(cfg.best_model_criterion)[0]
    model = exp / criterion.averaged_name
    if not model.is_file():  # fewer epochs than `keep`: ESPnet2 averages them all, `.ave.pth` names it
        model = (exp / criterion.averaged_name.replace(f".ave_{criterion.keep}best", ".ave")).resolve()
    return {
        "model": str(model),
        "train_s": round((exp / "checkpoint.pth").stat().st_mtime - _stamp(first.group(1)), 1),
        **json.loads((exp / TIMES).read_text()),  # the asr_train process's wall time, its threads
        "best_valid_loss": min(valid) if valid else None,
        "steps": int(steps[-1]) if steps else None,
    }


def evaluate(run: Path, cfg, exp: Path, model: str, timeout: float) -> dict:
    """espnet3's infer + measure stages on ESPnet2's model (ESPnet2's config.yaml in ``exp``)."""
    world_size, _ = workers(run)
    cmd = [sys.executable, "-m", "espnet3.launch", "--config", str(run / "train.yaml"), "--num-gpus", "0",
           "--num-workers", str(world_size), "--stages", "infer", "measure",
           f"exp_dir={exp}", f"name={cfg.name}_espnet2",
           f"{'' if 'model_file' in (cfg.inference or {}) else '+'}inference.model_file={model}"]
    log = exp / "evaluate.log"
    print(f"[parity] {cfg.name}: decoding ESPnet2's {Path(model).name} -> {log}", flush=True)
    rc, _ = run_logged(cmd, log, env=dict(bench_env(), RAY_TMPDIR=RAY_TMPDIR), timeout=timeout)
    if rc != 0:
        raise SystemExit(f"decoding ESPnet2's model failed (exit {rc}); see {log}")
    return _metrics(exp / "infer", cfg.data.test)


def summarize(rows: list[dict]) -> dict:
    split = next(iter(rows[0]["espnet3"]["metrics"]))  # the first test split
    side = {}
    for name in ("espnet3", "espnet2"):
        cers = [r[name]["metrics"][split]["cer"] for r in rows]
        wers = [r[name]["metrics"][split]["wer"] for r in rows]
        side[name] = {"mean_cer": statistics.mean(cers), "cer_spread": max(cers) - min(cers),
                      "mean_wer": statistics.mean(wers), "wer_spread": max(wers) - min(wers),
                      "mean_train_s": statistics.mean(r[name]["train_s"] for r in rows)}
    ratio = lambda key: side["espnet3"][key] / side["espnet2"][key] if side["espnet2"][key] else None  # noqa: E731
    return {"split": split, **side, "cer_ratio": ratio("mean_cer"), "train_time_ratio": ratio("mean_train_s")}


def markdown(result: dict) -> str:
    s, pct = result["summary"], lambda x: f"{100 * x:.2f} %"
    lines = [f"# espnet3 vs ESPnet2's trainer ({result['date']}, split `{s['split']}`)", "",
             "| seed | run | espnet3 CER | ESPnet2 CER | espnet3 WER | ESPnet2 WER | espnet3 train | ESPnet2 train "
             "| steps e3 / E2 | best valid/loss e3 / E2 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        e3, e2 = r["espnet3"], r["espnet2"]
        m3, m2 = e3["metrics"][s["split"]], e2["metrics"][s["split"]]
        v2 = f"{e2['best_valid_loss']:.3f}" if e2["best_valid_loss"] is not None else "-"
        lines.append(f"| {r['seed']} | `{r['run']}` | {pct(m3['cer'])} | {pct(m2['cer'])} | {pct(m3['wer'])} | "
                     f"{pct(m2['wer'])} | {e3['train_s']:.1f} s | {e2['train_s']:.1f} s | {e3['steps']} / {e2['steps']} | "
                     f"{e3['best_valid_loss']:.3f} / {v2} |")
    e3, e2 = s["espnet3"], s["espnet2"]
    ratio, time_ratio = (f"{s[k]:.3f}" if s[k] is not None else "-" for k in ("cer_ratio", "train_time_ratio"))
    lines += ["", f"Mean CER: espnet3 {pct(e3['mean_cer'])} (spread {pct(e3['cer_spread'])}), ESPnet2 "
              f"{pct(e2['mean_cer'])} (spread {pct(e2['cer_spread'])}); ratio espnet3/ESPnet2 **{ratio}**.",
              f"Mean WER: espnet3 {pct(e3['mean_wer'])} (spread {pct(e3['wer_spread'])}), ESPnet2 "
              f"{pct(e2['mean_wer'])} (spread {pct(e2['wer_spread'])}).",
              f"Mean training time: espnet3 {e3['mean_train_s']:.0f} s, ESPnet2 {e2['mean_train_s']:.0f} s "
              f"(ratio {time_ratio}); espnet3: workers' start to the last checkpoint, ESPnet2: "
              "epoch 1's start to the last checkpoint.pth.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.espnet2_parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished espnet3 runs (exp dirs) of the same config")
    parser.add_argument("--work-dir", type=Path, default=REPO / "exp" / "espnet2_parity",
                        help="ESPnet2's exp dirs go to WORK_DIR/<run name>/ (default exp/espnet2_parity)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where espnet2-parity-<date>.{json,md} go")
    parser.add_argument("--retrain", action="store_true", help="train again where WORK_DIR already has a finished run")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of ESPnet2's process (default: the run's workers x CPUs per worker)")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per ESPnet2 training or decoding")
    args = parser.parse_args(argv)
    from espnet3.config import load_config

    runs, work_dir, out = [r.resolve() for r in args.runs], args.work_dir.resolve(), args.out.resolve()
    os.chdir(REPO)  # relative paths in a train.yaml (data) are the repository's
    configs = [load_config(run / "train.yaml") for run in runs]
    espnet3 = [espnet3_side(run, cfg) for run, cfg in zip(runs, configs)]  # every run finished, before training
    rows = []
    for run, cfg, own in zip(runs, configs, espnet3):
        exp = work_dir / str(cfg.name)
        espnet2 = train_espnet2(run, cfg, exp, args.retrain, args.timeout, args.threads)
        espnet2["metrics"] = evaluate(run, cfg, exp, espnet2["model"], args.timeout)
        rows.append({"run": str(run), "seed": int(cfg.seed), "espnet3": own, "espnet2": espnet2})
        print(f"[parity] {cfg.name}: {json.dumps(rows[-1])}", flush=True)
    date = datetime.date.today().isoformat()
    result = {"date": date, "runs": rows, "summary": summarize(rows)}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"espnet2-parity-{date}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"espnet2-parity-{date}.md").write_text(markdown(result))
    print(markdown(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
