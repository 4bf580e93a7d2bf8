"""The benchmark table: one row per measured number, from the comparisons' results."""

from __future__ import annotations


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return " / ".join(_fmt(v) for v in value.values())
    return str(value)


ROWS = {
    "throughput": [("espnet3 (Ray Train, 2 workers) utt/s", "espnet3_utt_per_s"),
                   ("Lightning DDP (2 processes) utt/s", "lightning_ddp_utt_per_s"),
                   ("ratio espnet3 / Lightning (goal >= 0.98)", "ratio"), ("goal met", "met"),
                   ("espnet3 median step / between steps (ms)", "espnet3_profile"),
                   ("Lightning median step / between steps (ms)", "lightning_profile")],
    "throughput_spare_core": [("espnet3 (Ray Train, 1 worker) utt/s", "espnet3_utt_per_s"),
                              ("Lightning (1 process) utt/s", "lightning_utt_per_s"),
                              ("ratio, a core left for Ray's processes (goal >= 0.98)", "ratio"), ("goal met", "met"),
                              ("espnet3 median step / between steps (ms)", "espnet3_profile"),
                              ("Lightning median step / between steps (ms)", "lightning_profile")],
    "module_overhead": [("ESPnetLightningModule step, ToyASR (few-ms step), Lightning DDP (ms)", "espnet3_module_step_ms"),
                        ("bare LightningModule step, ToyASR (ms)", "plain_module_step_ms"),
                        ("ratio (goal <= 1.2)", "ratio"), ("goal met", "met"),
                        ("ESPnetLightningModule step, tiny_asr transformer, 1 utterance (ms)", "espnet3_tiny_asr_step_ms"),
                        ("bare LightningModule step, tiny_asr transformer (ms)", "plain_tiny_asr_step_ms"),
                        ("ratio, tiny_asr transformer", "ratio_tiny_asr")],
    "nan_consensus": [("step time, consensus on (us per 1k padded samples)", "step_time_on_us_per_ksample"),
                      ("step time, consensus off (us per 1k padded samples)", "step_time_off_us_per_ksample"),
                      ("ratio on / off (goal <= 1.01)", "ratio"), ("one consensus all_reduce (us)", "collective_us"),
                      ("median step (ms)", "median_step_ms"), ("ratio implied by the all_reduce", "ratio_from_collective"),
                      ("goal met", "met")],
    "notice_to_checkpoint": [("SIGTERM to the launcher -> a worker sees it (s)", "signal_to_seen_s"),
                             ("seen -> checkpoint written (s)", "seen_to_checkpoint_s"),
                             ("SIGTERM -> checkpoint written (s)", "signal_to_checkpoint_s"),
                             ("median step (s)", "median_step_s"),
                             ("ratio seen -> checkpoint / step (goal <= 1)", "ratio"),
                             ("steps logged after the notice was seen", "steps_after_seen"), ("goal met", "met")],
    "first_step": [("espnet3.launch, new local Ray (s)", "espnet3_local_s"),
                   ("espnet3.launch, running cluster (s)", "espnet3_cluster_s"),
                   ("Lightning DDP script (s)", "lightning_ddp_s"), ("ratio local", "ratio_local"),
                   ("ratio running cluster (goal <= 2.0)", "ratio_cluster"), ("goal met", "met")],
    "scaling": [("1 worker utt/s", "utt_per_s_1_worker"), ("2 workers utt/s", "utt_per_s_2_workers"),
                ("ratio (ideal 2.0)", "ratio"), ("peak RSS per worker, 1 worker (MB)", "peak_rss_mb_per_worker_1w"),
                ("peak RSS per worker, 2 workers (MB)", "peak_rss_mb_per_worker_2w")],
    "batching": [("padded-frame fraction, numel-sorted", "padded_fraction_sorted"),
                 ("padded-frame fraction, random", "padded_fraction_random"),
                 ("utt/s, numel-sorted", "utt_per_s_sorted"), ("utt/s, random", "utt_per_s_random"),
                 ("ratio sorted / random", "ratio")],
    "sweep": [("worker-seconds ratio ASHA / none", "worker_s_ratio"), ("best metric, ASHA", "best_metric_asha"),
              ("best metric, no scheduler", "best_metric_no_scheduler")],
    "gpu_throughput": [("espnet3 (Ray Train, 1 GPU) utt/s", "espnet3_utt_per_s"),
                       ("Lightning (1 GPU) utt/s", "lightning_utt_per_s"),
                       ("ratio espnet3 / Lightning (goal >= 0.98)", "ratio"),
                       ("median step (ms), espnet3 / Lightning", "espnet3_step_ms"), ("goal met", "met")],
    "gpu_step": [("espnet3 step (ms)", "pipeline_step_ms"), ("model-only step, batches on the GPU (ms)", "model_step_ms"),
                 ("ratio (goal <= 1.1)", "ratio"), ("utterances per batch", "utterances_per_batch"), ("goal met", "met")],
    "storage_run": [("2 workers, exp_dir in the bucket utt/s", "bucket_utt_per_s"),
                    ("2 workers, exp_dir on local disk utt/s", "local_utt_per_s"),
                    ("ratio bucket / local, the S3 server on the training cores", "ratio"),
                    ("S3 server CPU per 2-worker bucket run (s)", "s3_server_cpu_s_per_run"),
                    ("1 worker, exp_dir in the bucket utt/s", "bucket_utt_per_s_1w"),
                    ("1 worker, exp_dir on local disk utt/s", "local_utt_per_s_1w"),
                    ("ratio bucket / local, 1 worker (goal >= 0.98)", "ratio_1w"),
                    ("S3 server CPU per 1-worker bucket run (s)", "s3_server_cpu_s_per_run_1w"), ("goal met", "met")],
    "storage_data": [("local disk utt/s", "local_utt_per_s"),
                     ("bucket, one GET per audio file utt/s", "bucket_one_get_per_file_utt_per_s"),
                     ("bucket, prefetched (16 threads) utt/s", "bucket_prefetched_utt_per_s"),
                     ("bucket, shards streamed utt/s", "bucket_sharded_utt_per_s"),
                     ("ratio one GET per file / local", "ratio_one_get_per_file"),
                     ("ratio prefetched / local", "ratio_prefetched"),
                     ("ratio shards / local", "ratio_sharded"),
                     ("ratio shards / one GET per file", "ratio_sharded_vs_one_get_per_file")],
    "upstream": [("upstream ESPnet3 module utt/s", "upstream_utt_per_s"),
                 ("plain module utt/s", "lightning_ddp_utt_per_s"),
                 ("ratio upstream / plain", "ratio_upstream_vs_plain"),
                 ("ratio espnet3 / upstream", "ratio_espnet3_vs_upstream")],
}


def format_markdown(results: dict, header: str) -> str:
    lines = [f"# espnet3 benchmarks\n\n{header}\n", "| comparison | measure | value |", "|---|---|---|"]
    for name, result in results.items():
        if "skipped" in result or "error" in result:
            lines.append(f"| {name} | skipped | {result.get('skipped') or result.get('error')} |")
            continue
        for label, key in ROWS[name]:
            lines.append(f"| {name} | {label} | {_fmt(result.get(key))} |")
        if name == "first_step":
            for part in ("breakdown_espnet3_local", "breakdown_espnet3_cluster", "breakdown_lightning_ddp"):
                shown = ", ".join(f"{k} {v:.1f}" for k, v in result[part].items())
                lines.append(f"| {name} | {part.replace('breakdown_', 'breakdown (s), ')} | {shown} |")
        if name == "sweep":
            for label in ("asha", "no_scheduler"):
                r = result[label]
                lines.append(f"| sweep | {label}: worker-s / wall s / trials / best | "
                             f"{r['worker_s']:.1f} / {r['wall_s']:.1f} / {r['trials']} / {_fmt(r['best'])} |")
    return "\n".join(lines) + "\n"
