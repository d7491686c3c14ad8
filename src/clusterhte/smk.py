"""Helpers for the thin workflow scripts (``scripts/*.py``): logging and provenance.

Nothing statistical lives here; each script parses ``snakemake.input/params``, calls a stage
function from :mod:`clusterhte.stages`, and writes Parquet through :mod:`clusterhte.io`.
"""

from __future__ import annotations

import os
import sys
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


@contextmanager
def logged(snakemake):
    """Copy stderr to the rule's log file (if any) while the script runs."""
    logs = list(getattr(snakemake, "log", []) or [])
    if not logs:
        yield sys.stderr
        return
    Path(logs[0]).parent.mkdir(parents=True, exist_ok=True)
    with open(logs[0], "w") as fh:
        old = sys.stderr
        sys.stderr = _Tee(old, fh)
        try:
            yield sys.stderr
        finally:
            sys.stderr = old


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
