"""Where the CPU goes during steady training: every process's share of a core, from /proc.

    python -m benchmarks.cpu_shares [--config configs/digits_asr.yaml] [--seconds 60] [key=value ...]

Starts ``python -m espnet3.launch`` (2 CPU workers, train stage only), waits until the 20th
training step, reads every process's CPU time (``/proc/<pid>/stat`` utime + stime) twice,
``--seconds`` apart, then stops the run and prints each process's share of one core. On a machine
with as many cores as training workers, this is the profile behind the throughput comparison: what
Ray's own processes take is what the workers lose (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_times() -> dict[int, tuple[int, str]]:
    """pid -> (CPU ticks used so far, command line or name) for every visible process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (int(fields[11]) + int(fields[12]), cmd or stat.split("(", 1)[1].rsplit(")", 1)[0])
    return out


def shares(before: dict[int, tuple[int, str]], after: dict[int, tuple[int, str]], seconds: float) -> list[tuple[float, int, str]]:
    """(percent of one core, pid, command) of the processes alive at both samples, largest first."""
    rows = [(100.0 * (ticks - before[pid][0]) / TICKS_PER_S / seconds, pid, cmd)
            for pid, (ticks, cmd) in after.items() if pid in before]
    return sorted((row for row in rows if row[0] > 0), reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits_asr.yaml")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "launch.log", "w+") as log:
        cmd = [sys.executable, "-m", "espnet3.launch", "--config", args.config, "--num-gpus", "0",
               f"exp_dir={tmp}/exp", "trainer.max_epochs=1000", *args.overrides, "--stages", "train"]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            while " step 20/" not in Path(log.name).read_text():
                if proc.poll() is not None:
                    raise SystemExit(f"the run ended before its 20th step (exit {proc.returncode}):\n"
                                     + Path(log.name).read_text()[-2000:])
                time.sleep(1)
            before, start = cpu_times(), time.monotonic()
            time.sleep(args.seconds)
            rows = shares(before, cpu_times(), time.monotonic() - start)
        finally:
            proc.terminate()  # the launcher stops quietly on SIGTERM
            proc.wait(timeout=120)
    for percent, pid, name in rows[: args.top]:
        print(f"{percent:6.1f} %  {pid:8d}  {name[:90]}")
    print(f"{sum(r[0] for r in rows):6.1f} %  in all ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
