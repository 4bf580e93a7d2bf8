"""A real one-node SLURM on this machine (Debian's slurm-wlm + munge), started and stopped by the tests.

Installed with apt-get when missing and running as root (CI runs as root); otherwise the tests
that need it skip with the reason. The daemons get a private config, state and ports under a
temporary directory, and are stopped by the process ids recorded here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from net_utils import free_ports

BINARIES = ("sbatch", "slurmctld", "slurmd", "munged")
CPUS = 4  # the fewest CPUs the node declares


def install() -> str | None:
    """Why SLURM cannot be had here, or ``None`` once its binaries are on PATH."""
    if all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES):
        return None
    if os.geteuid() != 0:
        return "slurm-wlm and munge are not installed and installing them needs root"
    proc = subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if proc.returncode != 0:
        return f"apt-get install slurm-wlm munge failed: {proc.stderr.strip()[-300:]}"
    return None


class LocalSlurm:
    """munged (unless one runs), slurmctld and slurmd with one node: this machine, with at least ``CPUS`` CPUs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pids: list[int] = []
        for sub in ("state", "spool", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0]
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 2
        ctld_port, slurmd_port = free_ports(2)
        self.conf = root / "slurm.conf"
        self.conf.write_text("\n".join([
            "ClusterName=espnet3test", f"SlurmctldHost={host}", f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}", "AuthType=auth/munge", "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SlurmUser=root", "SlurmdUser=root", "JobRequeue=1",
            # How long a requeued job waits before it may start again (default 120 s).
            "AuthInfo=cred_expire=20", "ReturnToService=2", "MpiDefault=none",
            f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
            f"SlurmctldLogFile={root}/log/slurmctld.log", f"SlurmdLogFile={root}/log/slurmd.log",
            # At least 4 CPUs, whatever the machine has (config_overrides: slurmd takes the node as
            # configured), so that a 2-CPU run job and a 2-CPU sweep job run side by side on a 2-core CI
            # machine; the jobs mostly wait on paced steps, SLURM's signals and its requeue hold.
            "SlurmdParameters=config_overrides",
            f"NodeName={host} CPUs={max(CPUS, os.cpu_count() or 1)} RealMemory={memory} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", "",
        ]))
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> str | None:
        """Why it did not come up, or ``None`` when sinfo shows the node idle."""
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            subprocess.run(["su", "-s", "/bin/sh", "munge", "-c", "/usr/sbin/munged"], capture_output=True, timeout=60)
            pidfile = Path("/run/munge/munged.pid")
            if not pidfile.exists():
                return "munged did not start"
            self.pids.append(int(pidfile.read_text().split()[0]))
        for daemon in ("slurmctld", "slurmd"):
            log = open(self.root / "log" / f"{daemon}.out", "w")
            proc = subprocess.Popen([f"/usr/sbin/{daemon}", "-D", "-f", str(self.conf)], env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            self.pids.append(proc.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True).stdout
            if "idle" in out:
                return None
            time.sleep(1)
        return f"the SLURM node never became idle (sinfo: {out.strip()!r}); see {self.root}/log"

    def stop(self) -> None:
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(1)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def diagnosis(self, job: str) -> str:
        """What a failed test shows: SLURM's view of the job and the daemons' log lines about it
        (slurmd's first: a launch that fails on the node says why only there)."""
        parts = [subprocess.run(["scontrol", "show", "job", job], env=self.env, capture_output=True, text=True).stdout]
        for name in ("slurmd.log", "slurmctld.log"):
            path = self.root / "log" / name
            if not path.exists():
                parts.append(f"--- {path} (missing)")
                continue
            lines = path.read_text(errors="replace").splitlines()
            mentions = [i for i, line in enumerate(lines) if f"JobId={job}" in line or f"job {job}" in line.lower()]
            # From the job's first mention on (the start-up's missing state files and PMIx are noise).
            about = [line for line in lines[mentions[0] if mentions else len(lines):]
                     if f"JobId={job}" in line or f"job {job}" in line.lower() or "error" in line.lower()]
            parts.append(f"--- {path}\n" + "\n".join(about[-25:]))
        return "\n".join(parts)

    def job_state(self, job: str) -> str:
        out = subprocess.run(["scontrol", "show", "job", job], env=self.env, capture_output=True, text=True).stdout
        return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), "UNKNOWN")
