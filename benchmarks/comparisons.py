"""The comparisons ``python -m benchmarks.run`` runs, each a function of the harness's :class:`Bench`
returning its medians and ratios (benchmarks/README.md says what each number means)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.fixture import REPO
from benchmarks.harness import Bench, RayHead, Size, bench_env, breakdown, median, ratio, run_logged, throughput

COMPARISONS = ("throughput", "throughput_spare_core", "module_overhead", "nan_consensus", "notice_to_checkpoint", "first_step", "scaling",
               "batching", "sweep", "upstream", "storage_run", "storage_data")
# On a GPU machine (benchmarks/gpu_check.sh): skipped without CUDA, so not in the default list.
GPU_COMPARISONS = ("gpu_throughput", "gpu_step")


def compare_throughput(b: Bench) -> dict:
    e3, pl, single = [], [], []
    rss1, rss2, records, plain_records = [], [], [], []
    for _ in range(b.size.reps):
        record = b.espnet3(2)
        records.append(record)
        e3.append(throughput(record["ranks"], b.size.warmup))
        rss2 += [r["peak_rss_mb"] for r in record["ranks"]]
        plain = b.plain(2)
        plain_records.append(plain)
        pl.append(throughput(plain["ranks"], b.size.warmup))
        one = b.espnet3(1)
        single.append(throughput(one["ranks"], b.size.warmup))
        rss1 += [r["peak_rss_mb"] for r in one["ranks"]]
    b._cache["espnet3_2w"] = {"utt_per_s": e3, "records": records}
    b._cache["scaling"] = {"one": single, "two": e3, "rss1": rss1, "rss2": rss2}
    return {
        "espnet3_utt_per_s": median(e3),
        "lightning_ddp_utt_per_s": median(pl),
        "ratio": ratio(median(e3), median(pl)),
        "goal": ">= 0.98",
        "met": bool(ratio(median(e3), median(pl)) >= 0.98),
        "espnet3_profile": step_profile(records, b.size.warmup),
        "lightning_profile": step_profile(plain_records, b.size.warmup),
        "runs": {"espnet3": e3, "lightning_ddp": pl},
    }


def compare_throughput_spare_core(b: Bench) -> dict:
    """One training process each on the 2 cores: the other core is left to Ray's own processes (the
    console queue, GCS, raylet, dashboard, Train controller, ...), as on a machine with more cores
    than workers. Against ``throughput``, where both cores train, this separates what Ray's
    processes take from the CPU from what espnet3's step costs; the order alternates."""
    records: dict[str, list[dict]] = {"espnet3": [], "plain": []}
    for rep in range(max(2, b.size.reps)):
        for side in (("espnet3", "plain") if rep % 2 == 0 else ("plain", "espnet3")):
            records[side].append(b.espnet3(1) if side == "espnet3" else b.plain(1))
    e3, pl = ([throughput(r["ranks"], b.size.warmup) for r in records[side]] for side in ("espnet3", "plain"))
    r = ratio(median(e3), median(pl))
    return {"espnet3_utt_per_s": median(e3), "lightning_utt_per_s": median(pl), "ratio": r, "goal": ">= 0.98",
            "met": bool(r is not None and r >= 0.98),
            "espnet3_profile": step_profile(records["espnet3"], b.size.warmup),
            "lightning_profile": step_profile(records["plain"], b.size.warmup),
            "runs": {"espnet3": e3, "lightning": pl}}


def compare_storage_run(b: Bench) -> dict:
    """Training throughput with exp_dir in a bucket (local S3 server) vs on local disk.

    What a bucket changes is where checkpoints go, so both sides validate (one batch) and report a
    checkpoint every ``measure / 2`` steps, inside the measured steps; the order alternates. With 2
    workers the S3 server shares the 2 cores with training, which a real bucket's server does not:
    its CPU time per bucket run is recorded, and with 1 worker the server and Ray's processes have
    the other core, which is the comparison the goal is judged on."""
    checkpoints = (f"report_every_n_steps={max(1, b.size.measure // 2)}", "trainer.limit_val_batches=1")
    server = b.s3()["proc"].pid
    out: dict = {"runs": {}}
    for workers in (2, 1):
        local, bucket, server_cpu = [], [], []
        for rep in range(max(2, b.size.reps)):
            for side in (("bucket", "local") if rep % 2 == 0 else ("local", "bucket")):
                before = process_cpu_s(server)
                record = b.espnet3(workers, bucket=b.s3()["bucket"] if side == "bucket" else None, overrides=checkpoints)
                (bucket if side == "bucket" else local).append(throughput(record["ranks"], b.size.warmup))
                if side == "bucket":
                    server_cpu.append(process_cpu_s(server) - before)
        tag = "" if workers == 2 else "_1w"
        out.update({f"bucket_utt_per_s{tag}": median(bucket), f"local_utt_per_s{tag}": median(local),
                    f"ratio{tag}": ratio(median(bucket), median(local)),
                    f"s3_server_cpu_s_per_run{tag}": median(server_cpu)})
        out["runs"].update({f"bucket{tag}": bucket, f"local{tag}": local})
    out.update(goal=">= 0.98 (1 worker: the server off the training cores)",
               met=bool(out["ratio_1w"] is not None and out["ratio_1w"] >= 0.98))
    return out


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_split(data: Path) -> tuple[int, float]:
    """Read every item of a wav.scp (or a shard directory) through espnet3's dataset, in its
    order; (items, seconds)."""
    from espnet3.data.dataset import build_dataset, dataset_keys
    from espnet3.data.sources import SplitSource

    start = time.perf_counter()
    raw = str(data) if data.is_dir() else [[str(data), "speech", "sound"]]
    dataset = build_dataset(SplitSource.parse("bench", raw), None)
    keys = dataset_keys(dataset)
    for key in keys:
        if data.is_dir():  # the audio stream only (its text is a list file, and unprocessed text is a str)
            dataset.loader_dict["speech"][key]
        else:
            dataset[key]
    return len(keys), time.perf_counter() - start


def compare_storage_data(b: Bench) -> dict:
    """Utterances per second read from local disk vs from the bucket, one GET per audio file as a
    DataLoader worker does (cold local copies every repetition), and the same after the parallel
    prefetch the launcher's data check makes (16 threads), and from shards in the bucket
    (``espnet3.data.shard``, 100 utterances per shard at the quick size, streamed)."""
    from benchmarks import s3_server
    from espnet3 import storage
    from espnet3.data import remote
    from espnet3.data.shard import convert

    s3 = b.s3()
    corpus = Path(b.cfg.data.train).parent
    if "corpus" not in b._cache:
        b._cache["corpus"] = s3_server.upload_corpus(s3["endpoint"], s3["bucket"], corpus, "corpus")
    uri = b._cache["corpus"]
    saved = {k: os.environ.get(k) for k in [*s3["env"], storage.CACHE_ENV]}
    local, sequential, prefetched, sharded = [], [], [], []
    try:
        os.environ.update(s3["env"])
        shards = f"{uri}/shards/train"
        if "shards" not in b._cache:
            os.environ[storage.CACHE_ENV] = str(b.work / "storage-cache" / "convert")
            convert(f"{uri}/train", shards, utterances_per_shard=max(10, b.size.num_train // 3))
            b._cache["shards"] = shards
        for rep in range(max(2, b.size.reps)):
            n, seconds = _read_split(corpus / "train" / "wav.scp")
            local.append(n / seconds)
            for mode, results in (("sequential", sequential), ("prefetched", prefetched), ("sharded", sharded)):
                os.environ[storage.CACHE_ENV] = str(b.work / "storage-cache" / f"{mode}{rep}")
                shutil.rmtree(os.environ[storage.CACHE_ENV], ignore_errors=True)
                start = time.perf_counter()
                if mode == "sharded":
                    n, _ = _read_split(remote.fetch_directory(storage.local_copy(shards)))
                    results.append(n / (time.perf_counter() - start))
                    continue
                wav_scp = remote.fetch_list(storage.local_copy(f"{uri}/train/wav.scp"))
                if mode == "prefetched":
                    remote.fetch_items(p for paths in remote.item_files(wav_scp).values() for p in paths)
                n, seconds = _read_split(wav_scp)
                results.append(n / (time.perf_counter() - start))
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return {"local_utt_per_s": median(local), "bucket_one_get_per_file_utt_per_s": median(sequential),
            "bucket_prefetched_utt_per_s": median(prefetched), "bucket_sharded_utt_per_s": median(sharded),
            "ratio_one_get_per_file": ratio(median(sequential), median(local)),
            "ratio_prefetched": ratio(median(prefetched), median(local)),
            "ratio_sharded": ratio(median(sharded), median(local)),
            "ratio_sharded_vs_one_get_per_file": ratio(median(sharded), median(sequential)),
            "runs": {"local": local, "sequential": sequential, "prefetched": prefetched, "sharded": sharded}}


def median_step_ms(ranks: list[dict], warmup: int) -> float:
    """Rank 0's median step (batch start to the end of its optimizer step), warm-up excluded."""
    steps = ranks[0]["steps"][warmup:]
    return statistics.median((s["end"] - s["start"]) * 1000 for s in steps)


def between_steps_ms(ranks: list[dict], warmup: int) -> float:
    """Rank 0's median time from one step's end to the next one's start (the next batch, the
    callbacks and logging around a step), warm-up excluded."""
    steps = ranks[0]["steps"][warmup:]
    return statistics.median((b["start"] - a["end"]) * 1000 for a, b in zip(steps, steps[1:]))


def step_profile(records: list[dict], warmup: int) -> dict[str, float]:
    """Where a side's time per step goes, medians over its runs: the step itself and between steps."""
    return {"step_ms": round(median([median_step_ms(r["ranks"], warmup) for r in records]), 1),
            "between_steps_ms": round(median([between_steps_ms(r["ranks"], warmup) for r in records]), 2)}


def compare_module_overhead(b: Bench) -> dict:
    """ESPnetLightningModule vs a bare LightningModule, both under plain Lightning DDP (no Ray), on
    the same batches (one utterance per rank and step), sides alternated: on plain_ddp's ToyASR, a
    step of a few milliseconds where any fixed per-step cost of the module (logging, checks, the
    consensus) shows (the goal), and on tiny_asr's transformer."""
    size = Size("tiny", b.size.num_train, 16_000, 10, 25 * b.size.measure, b.size.reps, 0, 0, 0)
    tiny = b._cache.get("module_tiny") or Bench(size, b.work / "module_tiny", b.fixture.data_dir, None)
    b._cache["module_tiny"] = tiny
    runs: dict[str, list[float]] = {"espnet3_toy": [], "plain_toy": [], "espnet3_tiny_asr": [], "plain_tiny_asr": []}
    for _ in range(size.reps):
        for toy, model in ((True, "toy"), (False, "tiny_asr")):
            runs[f"espnet3_{model}"].append(median_step_ms(tiny.plain(2, module="espnet3", toy=toy)["ranks"], size.warmup))
            runs[f"plain_{model}"].append(median_step_ms(tiny.plain(2, toy=toy)["ranks"], size.warmup))
    value = ratio(median(runs["espnet3_toy"]), median(runs["plain_toy"]))
    return {"espnet3_module_step_ms": median(runs["espnet3_toy"]), "plain_module_step_ms": median(runs["plain_toy"]),
            "ratio": value, "goal": "<= 1.2", "met": bool(value is not None and value <= 1.2),
            "espnet3_tiny_asr_step_ms": median(runs["espnet3_tiny_asr"]),
            "plain_tiny_asr_step_ms": median(runs["plain_tiny_asr"]),
            "ratio_tiny_asr": ratio(median(runs["espnet3_tiny_asr"]), median(runs["plain_tiny_asr"])),
            "runs": runs}


def compare_scaling(b: Bench) -> dict:
    if "scaling" not in b._cache:
        compare_throughput(b)
    s = b._cache["scaling"]
    return {
        "utt_per_s_1_worker": median(s["one"]),
        "utt_per_s_2_workers": median(s["two"]),
        "ratio": ratio(median(s["two"]), median(s["one"])),
        "ideal": 2.0,
        "peak_rss_mb_per_worker_1w": max(s["rss1"]),
        "peak_rss_mb_per_worker_2w": max(s["rss2"]),
        "runs": {"1_worker": s["one"], "2_workers": s["two"]},
    }


def consensus_costs(ranks: list[dict], warmup: int) -> dict[bool, list[float]]:
    """Rank 0's step time per padded sample of the step's largest batch, by consensus on/off."""
    costs: dict[bool, list[float]] = {True: [], False: []}
    for i, step in enumerate(ranks[0]["steps"]):
        if i < warmup:
            continue
        padded = max(r["steps"][i]["padded"] for r in ranks)
        costs[bool(step["consensus"])].append((step["end"] - step["start"]) / padded)
    return costs


def compare_nan_consensus(b: Bench) -> dict:
    on, off, collective, step_ms, notice = [], [], [], [], []
    steps = b.size.warmup + 2 * b.size.measure
    for _ in range(b.size.reps):
        ranks = b.espnet3(2, consensus="alternate", steps=steps)["ranks"]
        costs = consensus_costs(ranks, b.size.warmup)
        on.append(median(costs[True]))
        off.append(median(costs[False]))
        collective.append(ranks[0].get("collective_us"))
        notice.append(ranks[0].get("notice_read_us"))
        step_ms.append(1e3 * median([s["end"] - s["start"] for s in ranks[0]["steps"][b.size.warmup:]]))
    us = median(collective)
    return {
        "step_time_on_us_per_ksample": 1e3 * 1e6 * median(on),
        "step_time_off_us_per_ksample": 1e3 * 1e6 * median(off),
        "ratio": ratio(median(on), median(off)),
        "collective_us": us,
        "median_step_ms": median(step_ms),
        "ratio_from_collective": 1 + us / (1e3 * median(step_ms)) if us is not None else None,
        # The preemption check: the notice rides in the same collective (measured above, as part
        # of "on"); what it adds alone is reading the local notice once per step.
        "notice_read_us": median([n for n in notice if n is not None]) if any(n is not None for n in notice) else None,
        "ratio_from_notice_read": (1 + median([n for n in notice if n is not None]) / (1e3 * median(step_ms))
                                   if any(n is not None for n in notice) else None),
        "goal": "<= 1.01",
        "met": bool(ratio(median(on), median(off)) <= 1.01),
        "runs": {"on": on, "off": off, "collective_us": collective},
    }


def train_step_times(tb_dir: Path) -> list[float]:
    """Wall time of each logged training step (``train/loss`` events, one per step with
    ``log_every_n_steps=1``), in step order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    by_step: dict[int, float] = {}
    for path in glob.glob(str(tb_dir / "**" / "events.out.tfevents.*"), recursive=True):
        for event in EventFileLoader(path).Load():
            if any(v.tag == "train/loss" for v in event.summary.value):
                by_step[event.step] = event.wall_time
    return [by_step[step] for step in sorted(by_step)]


def notice_record(exp: Path) -> dict | None:
    """The ``preemption`` record of the checkpoint written for a notice, with its step."""
    for path in sorted(exp.glob("checkpoint_*/metrics.json")):
        metrics = json.loads(path.read_text())
        if "preemption" in metrics:
            return metrics["preemption"]
    return None


def compare_notice_to_checkpoint(b: Bench) -> dict:
    """From a stop notice to the checkpoint written for it, in a 2-worker run: SIGTERM to the
    launcher (the path SLURM's walltime signal and a scheduler's preemption take). A node drain
    takes the same path from the moment a worker sees it; only the delivery differs (Ray's
    watcher polls drains, the launcher's board is polled, both once a second)."""
    delivery, in_step, total, step_s, steps_after = [], [], [], [], []
    for _ in range(b.size.reps):
        run = b.run_dir("notice")
        cmd = [sys.executable, "-m", "espnet3.launch", "--config", str(b.fixture.config), "--num-gpus", "0",
               f"exp_dir={run / 'exp'}", "trainer.max_epochs=1000", "trainer.max_steps=-1", "trainer.log_every_n_steps=1",
               "--stages", "train"]
        run.mkdir(parents=True)
        with open(run / "run.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=bench_env(), cwd=REPO)
        try:
            deadline = time.time() + 600
            while len(train_step_times(run / "exp" / "tensorboard")) < b.size.warmup + 3:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"espnet3.launch made no training steps to stop; see {run / 'run.log'}")
                time.sleep(0.5)
            signalled = time.time()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        record = notice_record(run / "exp")
        if record is None or "noticed_at" not in record:
            raise RuntimeError(f"no checkpoint was written for the SIGTERM (exit code {proc.returncode}); see {run / 'run.log'}")
        steps = train_step_times(run / "exp" / "tensorboard")
        delivery.append(record["noticed_at"] - signalled)
        in_step.append(record["time"] - record["noticed_at"])
        total.append(record["time"] - signalled)
        measured = steps[b.size.warmup:]
        step_s.append(median([later - earlier for earlier, later in zip(measured, measured[1:])]))
        steps_after.append(sum(t > record["noticed_at"] for t in steps))
    return {
        "signal_to_seen_s": median(delivery),
        "seen_to_checkpoint_s": median(in_step),
        "signal_to_checkpoint_s": median(total),
        "median_step_s": median(step_s),
        "ratio": ratio(median(in_step), median(step_s)),
        "steps_after_seen": max(steps_after),
        "goal": "checkpoint in the step the notice is seen (ratio <= 1, steps_after_seen <= 1)",
        "met": bool(ratio(median(in_step), median(step_s)) <= 1 and max(steps_after) <= 1),
        "runs": {"signal_to_seen_s": delivery, "seen_to_checkpoint_s": in_step, "steps_after_seen": steps_after},
    }


def compare_first_step(b: Bench) -> dict:
    local, plain, cluster, plain_breakdowns = [], [], [], []
    for _ in range(b.size.reps):
        local.append(b.launch_first_step())
        record = b.plain(2, steps=1)
        plain.append(record["ranks"][0]["marks"]["first_step_end"] - record["ranks"][0]["marks"]["process_start"])
        plain_breakdowns.append(breakdown(record))
    head = RayHead(b.work / "runs" / "ray_head.log")
    try:
        head.wait()
        cluster_breakdown = breakdown(b.espnet3(2, steps=1, address=head.address))
        for _ in range(b.size.reps):
            cluster.append(b.launch_first_step(head.address))
            record = b.plain(2, steps=1)
            plain.append(record["ranks"][0]["marks"]["first_step_end"] - record["ranks"][0]["marks"]["process_start"])
    finally:
        head.stop()
    local_breakdown = breakdown(b._cache["espnet3_2w"]["records"][0]) if "espnet3_2w" in b._cache else breakdown(b.espnet3(2, steps=1))
    e3_local = median([r["first_step_s"] for r in local])
    e3_cluster = median([r["first_step_s"] for r in cluster])
    p = median(plain)
    return {
        "espnet3_local_s": e3_local,
        "espnet3_cluster_s": e3_cluster,
        "lightning_ddp_s": p,
        "ratio_local": ratio(e3_local, p),
        "ratio_cluster": ratio(e3_cluster, p),
        "goal": "ratio_cluster <= 2.0",
        "met": bool(ratio(e3_cluster, p) <= 2.0),
        "breakdown_espnet3_local": local_breakdown,
        "breakdown_espnet3_cluster": cluster_breakdown,
        "breakdown_lightning_ddp": plain_breakdowns[0],
        "runs": {"espnet3_local": local, "espnet3_cluster": cluster, "lightning_ddp": plain},
    }


def compare_batching(b: Bench) -> dict:
    results = []
    for _ in range(b.size.reps):
        run = b.run_dir("batching")
        cmd = [sys.executable, "-m", "benchmarks.batch_speed", "--config", str(b.fixture.config),
               "--batches", str(b.size.batching_batches), "--out", str(run / "result.json")]
        code, _ = run_logged(cmd, run / "run.log")
        if code:
            raise RuntimeError(f"batching run failed with exit code {code}; see {run / 'run.log'}")
        results.append(json.loads((run / "result.json").read_text()))
    first = results[0]
    sorted_rate = median([r["utt_per_s_sorted"] for r in results])
    random_rate = median([r["utt_per_s_random"] for r in results])
    return {
        "padded_fraction_sorted": first["padded_fraction_sorted"],
        "padded_fraction_random": first["padded_fraction_random"],
        "utt_per_s_sorted": sorted_rate,
        "utt_per_s_random": random_rate,
        "ratio": ratio(sorted_rate, random_rate),
        "batches_measured": first["batches_measured"],
        "runs": results,
    }


def compare_sweep(b: Bench) -> dict:
    if not b.size.sweep_samples:
        return {"skipped": "not at this size (minutes of Tune trials): --size full --only sweep"}
    base = REPO / "configs" / "sweep_tiny.yaml"
    from omegaconf import OmegaConf

    out = {}
    for label, scheduler in (("asha", "keep"), ("no_scheduler", "none")):
        sweep = OmegaConf.load(base)
        sweep.base = str((base.parent / str(sweep.base)).resolve())
        sweep.num_samples = b.size.sweep_samples
        run = b.run_dir(f"sweep_{label}")
        sweep.name = f"bench_{label}"
        sweep.output_dir = str(run / "sweep")
        if scheduler == "none":
            sweep.scheduler = "none"
        path = run / "sweep.yaml"
        run.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(sweep, path)
        try:
            # A hung sweep (trials waiting forever for a worker group) must not hang the benchmark.
            code, start = run_logged([sys.executable, "-m", "espnet3.launch", "--sweep", str(path), "--num-gpus", "0"],
                                     run / "run.log", timeout=120 * b.size.sweep_samples)
        except subprocess.TimeoutExpired:
            return {"skipped": f"{label} sweep did not finish in {120 * b.size.sweep_samples} s; see {run / 'run.log'}"}
        wall = time.time() - start
        if code:
            return {"skipped": f"sweep run failed (exit code {code}); see {run / 'run.log'}"}
        out[label] = {"wall_s": wall, **sweep_stats(run / "sweep", str(sweep.metric), str(sweep.mode),
                                                    int(sweep.get("workers_per_trial", 1)))}
    a, n = out["asha"], out["no_scheduler"]
    return {**out, "worker_s_ratio": ratio(a["worker_s"], n["worker_s"]),
            "best_metric_asha": a["best"], "best_metric_no_scheduler": n["best"]}


def sweep_stats(output_dir: Path, metric: str, mode: str, workers: int) -> dict:
    """Worker-seconds (each trial's Tune ``time_total_s`` times its workers) and the best metric."""
    worker_s, best, trials = 0.0, None, 0
    for path in glob.glob(str(output_dir / "**" / "result.json"), recursive=True):
        lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        if not lines:
            continue
        trials += 1
        worker_s += max(r.get("time_total_s", 0.0) for r in lines) * workers
        values = [r[metric] for r in lines if isinstance(r.get(metric), (int, float))]
        if values:
            candidate = min(values) if mode == "min" else max(values)
            best = candidate if best is None or (candidate < best if mode == "min" else candidate > best) else best
    return {"worker_s": worker_s, "best": best, "trials": trials}


def compare_upstream(b: Bench) -> dict:
    python = b.upstream_python
    if not python:
        return {"skipped": "no --upstream-python given (needs an environment with espnet >= 202609 on Python 3.12)"}
    probe = subprocess.run([python, "-c", "import espnet, sys; print(espnet.__version__, sys.version.split()[0])"],
                           capture_output=True, text=True, cwd="/")
    if probe.returncode:
        return {"skipped": f"{python} cannot import espnet: {probe.stderr.strip().splitlines()[-1:]}"}
    upstream, plain = [], []
    for _ in range(b.size.reps):
        upstream.append(throughput(b.plain(2, python=python, module="upstream")["ranks"], b.size.warmup))
        plain.append(throughput(b.plain(2)["ranks"], b.size.warmup))
    e3 = median(b._cache["espnet3_2w"]["utt_per_s"]) if "espnet3_2w" in b._cache else None
    return {
        "upstream_version": probe.stdout.strip(),
        "upstream_utt_per_s": median(upstream),
        "lightning_ddp_utt_per_s": median(plain),
        "ratio_upstream_vs_plain": ratio(median(upstream), median(plain)),
        "ratio_espnet3_vs_upstream": ratio(e3, median(upstream)),
        "runs": {"upstream": upstream, "lightning_ddp": plain},
    }


def _no_cuda() -> dict | None:
    import torch

    return None if torch.cuda.is_available() else {"skipped": "no CUDA device (run benchmarks/gpu_check.sh on a GPU machine)"}


def compare_gpu_throughput(b: Bench) -> dict:
    """espnet3 on Ray with 1 GPU worker vs a plain LightningModule on 1 GPU, same batches, alternating."""
    if (skip := _no_cuda()) is not None:
        return skip
    e3, pl, e3_ms, pl_ms = [], [], [], []
    for _ in range(b.size.reps):
        ranks = b.espnet3(1, gpus=1)["ranks"]
        e3.append(throughput(ranks, b.size.warmup))
        e3_ms.append(median_step_ms(ranks, b.size.warmup))
        ranks = b.plain(1, accelerator="gpu")["ranks"]
        pl.append(throughput(ranks, b.size.warmup))
        pl_ms.append(median_step_ms(ranks, b.size.warmup))
    b._cache["gpu_step_ms"] = median(e3_ms)
    value = ratio(median(e3), median(pl))
    return {"espnet3_utt_per_s": median(e3), "lightning_utt_per_s": median(pl), "ratio": value,
            "espnet3_step_ms": median(e3_ms), "lightning_step_ms": median(pl_ms),
            "goal": ">= 0.98", "met": bool(value is not None and value >= 0.98), "runs": {"espnet3": e3, "lightning": pl}}


def compare_gpu_step(b: Bench) -> dict:
    """espnet3's whole training step vs the model's own step (batches already on the GPU), same batches."""
    if (skip := _no_cuda()) is not None:
        return skip
    if "gpu_step_ms" not in b._cache:
        b._cache["gpu_step_ms"] = median_step_ms(b.espnet3(1, gpus=1)["ranks"], b.size.warmup)
    plan = b.plan(1, b.size.warmup + b.size.measure)
    out = subprocess.run([sys.executable, "-m", "benchmarks.model_step", "--plan", str(plan), "--device", "cuda",
                          "--steps", str(b.size.measure), "--warmup", str(b.size.warmup)],
                         capture_output=True, text=True, env=bench_env(), cwd=REPO, timeout=600)
    if out.returncode:
        raise RuntimeError(f"benchmarks.model_step failed: {out.stderr[-1500:]}")
    model = json.loads(out.stdout.strip().splitlines()[-1])
    value = ratio(b._cache["gpu_step_ms"], model["plan_step_ms"])
    return {"pipeline_step_ms": b._cache["gpu_step_ms"], "model_step_ms": model["plan_step_ms"], "ratio": value,
            "utterances_per_batch": model["utterances_per_batch"], "device": model["device"],
            "goal": "<= 1.1", "met": bool(value is not None and value <= 1.1)}


RUNNERS = {
    "throughput": compare_throughput,
    "throughput_spare_core": compare_throughput_spare_core,
    "module_overhead": compare_module_overhead,
    "nan_consensus": compare_nan_consensus,
    "notice_to_checkpoint": compare_notice_to_checkpoint,
    "first_step": compare_first_step,
    "scaling": compare_scaling,
    "batching": compare_batching,
    "sweep": compare_sweep,
    "upstream": compare_upstream,
    "storage_run": compare_storage_run,
    "storage_data": compare_storage_data,
    "gpu_throughput": compare_gpu_throughput,
    "gpu_step": compare_gpu_step,
}
