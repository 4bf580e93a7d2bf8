"""Summarise a ``benchmarks/gpu_check.sh`` output folder as markdown (goals beside the numbers).

    python -m benchmarks.gpu_summary OUT
"""

from __future__ import annotations

import datetime
import glob
import json
import statistics
import sys
from pathlib import Path


def _status(out: Path, name: str) -> str:
    path = out / f"{name}.status.json"
    if not path.exists():
        return "not run"
    status = json.loads(path.read_text())
    return f"exit {status['exit_code']} in {status['seconds']} s"


def _last_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    for line in reversed(path.read_text().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def training_window(exp: Path) -> tuple[float, float] | None:
    """Wall-clock times of the first and the last ``train/*`` TensorBoard event of a run."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    times = [event.wall_time
             for path in glob.glob(str(exp / "tensorboard" / "**" / "events.out.tfevents.*"), recursive=True)
             for event in EventFileLoader(path).Load()
             if any(v.tag.startswith("train/") for v in event.summary.value)]
    return (min(times), max(times)) if len(times) > 1 else None


def utilisation(smi_csv: Path, window: tuple[float, float] | None) -> dict | None:
    """Mean and median GPU utilisation (%) and peak memory (MiB) of nvidia-smi samples inside ``window``."""
    if not smi_csv.exists() or window is None:
        return None
    util, memory = [], []
    for line in smi_csv.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        try:
            when = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            value, mib = float(parts[1]), float(parts[2])
        except ValueError:
            continue
        if window[0] <= when <= window[1]:
            util.append(value)
            memory.append(mib)
    if not util:
        return None
    return {"mean": statistics.fmean(util), "median": statistics.median(util), "samples": len(util),
            "peak_memory_mib": max(memory)}


def summarise(out: Path) -> str:
    lines = ["# espnet3 GPU check", "", f"`{out}`", "", "| check | result | goal |", "|---|---|---|"]
    if (out / "install.status.json").exists():  # gpu_check.sh made the venv from offline wheels
        lines.append(f"| offline install from wheels | {_status(out, 'install')} | exit 0 |")
    exp = out / "default_job"
    metrics_file = exp / "infer" / "test" / "metrics.json"
    cer = json.loads(metrics_file.read_text()).get("cer") if metrics_file.exists() else None
    window = training_window(exp)
    trained = f"training {window[1] - window[0]:.0f} s" if window else "no training events"
    lines.append(f"| default job (1 GPU) | {_status(out, 'default_job')}; test CER {cer if cer is not None else 'n/a'} %; "
                 f"{trained} | training well under a minute |")
    used = utilisation(out / "smi.csv", window)
    lines.append(f"| GPU utilisation during training | mean {used['mean']:.0f} %, median {used['median']:.0f} %, "
                 f"peak memory {used['peak_memory_mib']:.0f} MiB ({used['samples']} samples) | mean >= 60 % |"
                 if used else "| GPU utilisation during training | n/a | mean >= 60 % |")
    for name in ("nan_fp32", "nan_bf16"):
        result = _last_json(out / f"{name}.log")
        lines.append(f"| NaN guard on CUDA ({name[4:]}) | {_status(out, name)}; "
                     f"{'as on CPU' if result and result.get('ok') else result} | skips, Adam steps, limit as on CPU |")
    bench = out / "bench_results" / "latest.json"
    results = json.loads(bench.read_text()) if bench.exists() else {}
    for name, label, key, goal in (("gpu_throughput", "espnet3 / Lightning utt/s (1 GPU)", "ratio", ">= 0.98"),
                                   ("gpu_step", "espnet3 step / model-only step", "ratio", "<= 1.1")):
        r = results.get(name, {})
        shown = r.get("skipped") or r.get("error") or (f"{r[key]:.3f}" if r.get(key) is not None else "n/a")
        lines.append(f"| {label} | {shown} | {goal} |")
    steps = _last_json(out / "model_step.log")
    for size, row in ((steps or {}).get("sizes") or {}).items():
        lines.append(f"| model-only step, {size} utterances | foreach {row['foreach']['step_ms']:.1f} ms "
                     f"({row['foreach']['utt_per_s']:.0f} utt/s), fused {row['fused']['step_ms']:.1f} ms "
                     f"({row['fused']['utt_per_s']:.0f} utt/s) | - |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(summarise(Path(argv[0] if argv else "exp/gpu_check")), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
