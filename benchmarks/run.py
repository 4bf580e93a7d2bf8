"""Run every benchmark comparison side by side and write the table.

    python -m benchmarks.run [--quick | --size tiny|quick|full] [--only NAME ...] [--upstream-python PATH]

The command line: the harness (:mod:`benchmarks.harness`) runs the comparisons
(:mod:`benchmarks.comparisons`), each starting fresh processes for its sides and alternating them
(A, B, A, B, ...) so that background load hits both alike; the table (:mod:`benchmarks.report`)
holds medians over the repetitions and their ratios.
Results go to ``benchmarks/results/latest.md`` and ``latest.json`` (one key per comparison).
See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from benchmarks.comparisons import COMPARISONS, GPU_COMPARISONS, RUNNERS
from benchmarks.fixture import REPO
from benchmarks.harness import RESULTS_DIR, SIZES, Bench
from benchmarks.report import format_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="same as --size quick")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--only", nargs="+", choices=COMPARISONS + GPU_COMPARISONS, default=None)
    parser.add_argument("--upstream-python", default=None, help="python of an environment with espnet >= 202609")
    parser.add_argument("--work-dir", type=Path, default=REPO / "exp" / "bench")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: data/bench_digits (tiny: work dir)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    # `timeout`, a scheduler or a closed terminal: unwind (subprocess.run kills the running side,
    # RayHead.stop ends its cluster) instead of dying with clusters left behind.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, frame: sys.exit(128 + number))
    size_name = "quick" if args.quick else args.size
    size = SIZES[size_name]
    work = args.work_dir.resolve() / size_name
    data = args.data_dir or (work / "data" if size_name == "tiny" else REPO / "data" / f"bench_digits_{size.num_train}")
    bench = Bench(size, work, data, args.upstream_python)
    results: dict[str, dict] = {}
    started = time.time()
    for name in args.only or COMPARISONS:
        print(f"[bench] {name} ...", flush=True)
        begin = time.time()
        try:
            results[name] = RUNNERS[name](bench)
        except Exception as exc:  # one failing comparison must not lose the others' numbers
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["seconds"] = round(time.time() - begin, 1)
        print(f"[bench] {name}: {json.dumps({k: v for k, v in results[name].items() if k != 'runs'}, default=str)[:400]}", flush=True)
    header = (f"size `{size_name}` ({size.model}, {size.num_train} train utterances, batch_bins {size.batch_bins}, "
              f"{size.warmup} warm-up + {size.measure} measured steps, {size.reps} alternations, 1 thread per worker); "
              f"{time.strftime('%Y-%m-%d %H:%M')}, {time.time() - started:.0f} s")
    table = format_markdown(results, header)
    print(table)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "latest.md").write_text(table)
    (args.results_dir / "latest.json").write_text(json.dumps({"size": size_name, **results}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
