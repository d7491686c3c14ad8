"""A throwaway single-node SLURM cluster on localhost for the integration test.

Installs Debian's ``slurm-wlm`` and ``munge`` when they are missing (needs root and apt), writes a
``slurm.conf`` into a temporary directory, starts ``munged``, ``slurmctld`` and ``slurmd`` with that
configuration, and stops every daemon it started by its pid. Job completions are logged to a text
file (``jobcomp/filetxt``) so a test can see which jobs SLURM ran without ``slurmdbd``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scancel")


class SlurmUnavailable(RuntimeError):
    pass


def ensure_installed() -> None:
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable("slurm-wlm/munge are not installed and cannot be installed here "
                               "(needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        r = subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], env=env,
                           capture_output=True, text=True)
    if r.returncode != 0:
        raise SlurmUnavailable(f"apt-get install slurm-wlm munge failed: {r.stderr[-500:]}")


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin") / name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """Context manager: ``with LocalSlurm(tmp) as s: s.env`` (environment pointing at the cluster)."""

    def __init__(self, root: Path, cpus: int | None = None, mem_mb: int = 8000):
        self.root = Path(root)
        self.cpus = cpus or os.cpu_count() or 2
        self.mem_mb = mem_mb
        self.pids: dict[str, int] = {}
        self.host = socket.gethostname().split(".")[0]

    # ------------------------------------------------------------------ configuration
    def write_config(self) -> Path:
        r = self.root
        for d in ("state", "spool", "log", "munge", "run"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o711)
        ctl, slurmd = _free_port(), _free_port()
        conf = f"""
ClusterName=clusterhte
SlurmctldHost={self.host}
SlurmctldPort={ctl}
SlurmdPort={slurmd}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={r / 'munge' / 'munge.socket'}
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}
SlurmdPidFile={r / 'run' / 'slurmd.pid'}
SlurmdSpoolDir={r / 'spool'}
StateSaveLocation={r / 'state'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={r / 'log' / 'jobcomp.txt'}
MinJobAge=86400
InactiveLimit=0
KillWait=5
Waittime=0
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""
        (r / "slurm.conf").write_text(conf.lstrip())
        return r / "slurm.conf"

    def write_wrappers(self) -> Path:
        """Wrappers of the SLURM client commands that pin SLURM_CONF: the executor plugin deletes
        every SLURM_* variable before it calls srun inside a job, PATH survives."""
        b = self.root / "bin"
        b.mkdir(exist_ok=True)
        for cmd in ("srun", "sbatch", "squeue", "scancel", "sacct", "sinfo", "scontrol"):
            real = shutil.which(cmd) or f"/usr/bin/{cmd}"
            w = b / cmd
            w.write_text(f'#!/bin/sh\nSLURM_CONF="{self.root / "slurm.conf"}" exec {real} "$@"\n')
            os.chmod(w, 0o755)
        return b

    @property
    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=str(self.root / "slurm.conf"),
                    PATH=f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")

    # ------------------------------------------------------------------ daemons
    def _start(self, name: str, args: list[str], pidfile: Path | None = None) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        p = subprocess.Popen([_which(name), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.pids[name] = p.pid

    def start(self) -> "LocalSlurm":
        ensure_installed()
        self.write_config()
        self.write_wrappers()
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        m = self.root / "munge"
        self._start("munged", ["-F", "--force", f"--key-file={key}", f"--socket={m / 'munge.socket'}",
                               f"--pid-file={m / 'munged.pid'}", f"--log-file={m / 'munged.log'}",
                               f"--seed-file={m / 'munged.seed'}"])
        self._wait(lambda: (m / "munge.socket").exists(), "munged socket")
        self._start("slurmctld", ["-D", "-i", "-f", str(self.root / "slurm.conf")])
        self._start("slurmd", ["-D", "-f", str(self.root / "slurm.conf"), "-N", self.host])
        self._wait(self._node_idle, "the node to be idle")
        return self

    def _node_idle(self) -> bool:
        r = subprocess.run([_which("sinfo"), "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return r.returncode == 0 and "idle" in r.stdout

    def _wait(self, cond, what: str, timeout: float = 60) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if cond():
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in (self.root / "log").glob("*")
                         if p.is_file())
        self.stop()
        raise SlurmUnavailable(f"timed out waiting for {what}\n{logs}")

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(40):
                try:
                    os.kill(pid, 0)
                    os.waitpid(pid, os.WNOHANG)
                except (ProcessLookupError, ChildProcessError):
                    break
                time.sleep(0.25)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def completed_jobs(self) -> list[dict]:
        """Job completion records (jobcomp/filetxt): one dict per finished job."""
        f = self.root / "log" / "jobcomp.txt"
        if not f.exists():
            return []
        out = []
        for line in f.read_text().splitlines():
            out.append(dict(kv.split("=", 1) for kv in line.split() if "=" in kv))
        return out

    def squeue(self) -> list[tuple[str, str, str]]:
        r = subprocess.run([_which("squeue"), "-h", "-o", "%i %T %j"], env=self.env, capture_output=True,
                           text=True)
        return [tuple(l.split(None, 2)) for l in r.stdout.splitlines() if l.strip()]

    def scancel(self, job_id: str) -> None:
        subprocess.run([_which("scancel"), str(job_id)], env=self.env, check=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
