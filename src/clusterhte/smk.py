"""Helpers for the thin workflow scripts (``scripts/*.py``): logging and provenance.

Nothing statistical lives here; each script parses ``snakemake.input/params``, calls a stage
function from :mod:`clusterhte.stages`, and writes Parquet through :mod:`clusterhte.io`.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from clusterhte import io


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are about the user's input or environment (one line is the whole story)."""
    from clusterhte.data.fetch import DataFetchError
    from clusterhte.data.trial import TrialDataError
    from clusterhte.methods.base import MethodError
    return (TrialDataError, DataFetchError, MethodError, io.InputFileError)


@contextmanager
def logged(snakemake):
    """Copy stderr to the rule's log file (if any) while the script runs.

    An error ends up in the log, which stays open until it is written: a bad input or a failed
    download (:func:`_user_errors`) as one line ``error in rule R: message`` (also on stderr, and
    the script exits with status 1 without a traceback); anything else with its full traceback.
    """
    logs = list(getattr(snakemake, "log", []) or [])
    rule = getattr(snakemake, "rule", "?")
    fh = None
    old = sys.stderr
    if logs:
        Path(logs[0]).parent.mkdir(parents=True, exist_ok=True)
        fh = open(logs[0], "w")
        sys.stderr = _Tee(old, fh)
    try:
        yield sys.stderr
    except _user_errors() as e:
        print(f"error in rule {rule}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except BaseException:
        if fh is not None and not isinstance(sys.exc_info()[1], SystemExit):
            traceback.print_exc(file=fh)
            fh.flush()
        raise
    finally:
        sys.stderr = old
        if fh is not None:
            fh.close()


def inputs(snakemake) -> list[str]:
    return [str(p) for p in snakemake.input]


def prov(snakemake, config=None, seed=None, extra=None) -> dict:
    """Provenance record for an output of this rule."""
    cfg = dict(config or {})
    cfg.setdefault("wildcards", dict(snakemake.wildcards.items()))
    return io.provenance(rule=snakemake.rule, inputs=inputs(snakemake), config=cfg, seed=seed, extra=extra)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def limit_threads(threads: int = 1) -> None:
    """Give BLAS/OpenMP/numba exactly the rule's ``threads`` (call before importing numpy).

    Snakemake schedules jobs by their ``threads``; matching the libraries' thread pools to it is
    what keeps parallel jobs from oversubscribing the cores.
    """
    for v in THREAD_VARIABLES:
        os.environ[v] = str(max(1, int(threads)))


# ------------------------------------------------------------------ `make run`: resume after any kill
RUN_LOCK = ".snakemake/clusterhte-run.lock"


def _snakemake_exe() -> str:
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else "snakemake"


def source_date_epoch(cwd: str | os.PathLike = ".") -> str | None:
    """Commit time of the checked-out workflow (seconds since 1970), for ``SOURCE_DATE_EPOCH``;
    outside a git checkout the modification time of the Snakefile."""
    import subprocess
    try:
        out = subprocess.run(["git", "-C", str(cwd), "log", "-1", "--format=%ct"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    if out.isdigit():
        return out
    snakefile = Path(cwd) / "Snakefile"  # not a git checkout: the workflow's own time stamp
    return str(int(snakefile.stat().st_mtime)) if snakefile.exists() else None


def run_workflow(args: list[str], cwd: str | os.PathLike = ".") -> int:
    """Run Snakemake so that a run stopped in any way (Ctrl-C, ``kill -9``, a closed terminal, a
    cancelled allocation) resumes by running the same command again. What ``make run`` calls.

    - An OS lock (``flock`` on ``.snakemake/clusterhte-run.lock``, held by this process and inherited
      by Snakemake, released by the kernel however they end) admits one run per directory; a second
      one stops with a message instead of waiting.
    - Holding it, any Snakemake lock left in ``.snakemake/locks`` can only be stale (its run was
      killed), so it is removed (``snakemake --unlock``).
    - ``--rerun-incomplete``: the jobs that were running when the run was killed start again (their
      outputs were never renamed into place, see :func:`clusterhte.io.atomic_path`); jobs that had
      finished are kept.
    - ``--keep-going``: a failing job stops only what depends on it; the other studies finish and
      the exit status is non-zero.
    - ``SOURCE_DATE_EPOCH`` (unless set) is the commit time, so reruns write byte-identical files.
    """
    import fcntl
    import subprocess

    cwd = Path(cwd)
    lock = cwd / RUN_LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        print(f"clusterhte: another run of the workflow is active in {cwd.resolve()} "
              f"(it holds {RUN_LOCK}); wait for it to end or stop it first", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if not env.get("SOURCE_DATE_EPOCH"):
        sde = source_date_epoch(cwd)
        if sde:
            env["SOURCE_DATE_EPOCH"] = sde
    exe = _snakemake_exe()
    locks = cwd / ".snakemake" / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        r = subprocess.run([exe, "--unlock", *args], cwd=cwd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout + r.stderr, file=sys.stderr)
            return r.returncode
        print("clusterhte: removed the Snakemake lock left by an interrupted run; resuming", file=sys.stderr)
    try:
        return subprocess.run([exe, "--rerun-incomplete", "--keep-going", *args], cwd=cwd, env=env,
                              pass_fds=(fd,)).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        os.close(fd)


if __name__ == "__main__":  # python -m clusterhte.smk run [snakemake arguments]
    if len(sys.argv) < 2 or sys.argv[1] != "run":
        print("usage: python -m clusterhte.smk run [snakemake arguments]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_workflow(sys.argv[2:]))
