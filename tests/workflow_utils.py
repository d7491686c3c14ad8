"""Run the Snakemake workflow in a throwaway copy of the repository's workflow files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
COPY = ["Snakefile", "workflow", "scripts", "config", "notebooks", "tests/data"]


def workdir(tmp: Path, config: dict | None = None, methods: dict | None = None) -> Path:
    """Copy the workflow into ``tmp`` (results land there), optionally with a run config."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, tmp / name)
    if config is not None:
        (tmp / "run.yaml").write_text(yaml.safe_dump(config))
    if methods is not None:
        (tmp / "config" / "methods.yaml").write_text(yaml.safe_dump(methods))
    return tmp


def snakemake(wd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "--cores", "2"]
    if (wd / "run.yaml").exists():
        cmd += ["--configfile=run.yaml"]
    return subprocess.run(cmd + list(args), cwd=wd, capture_output=True, text=True, timeout=timeout)


def planned_jobs(dry_run_stdout: str) -> dict[str, int]:
    """The job-count table of a ``snakemake -n`` run: {rule: count}."""
    out, on = {}, False
    for line in dry_run_stdout.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            on = True
            continue
        if on:
            if len(parts) == 2 and parts[1].isdigit() and not set(parts[0]) <= {"-"}:
                if parts[0] != "total":
                    out[parts[0]] = int(parts[1])
            elif parts and not set(parts[0]) <= {"-"} and out:
                break
    return out


def make_run(wd: Path, config: str = "run.yaml", shared: str | Path | None = None, timeout: int = 900,
             **popen) -> subprocess.CompletedProcess:
    """``make run`` of the repository's Makefile in ``wd`` with this interpreter's environment
    (no venv set-up: STAMP is empty), the run config ``config`` and ``SHARED=shared``."""
    return subprocess.run(make_run_cmd(wd, config, shared), capture_output=True, text=True,
                          timeout=timeout, **popen)


def make_run_cmd(wd: Path, config: str = "run.yaml", shared: str | Path | None = None) -> list[str]:
    cmd = ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "-C", str(wd), "run", "STAMP=",
           f"BIN={Path(sys.executable).parent}", f"CONFIG={config}", "CORES=2"]
    if shared is not None:
        cmd.append(f"SHARED={shared}")
    return cmd
