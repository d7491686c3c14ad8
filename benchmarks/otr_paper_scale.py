"""Per-cell seconds per replicate of the multisite-OTR study's whole stage path, and the projected
wall time of the paper-scale study (16 cells x 500 replicates x 14 estimators) on ``--cores``.

    .venv/bin/python benchmarks/otr_paper_scale.py [--reps 4] [--cores 2] [--designs d1,d2,d3,d4]

For each design cell, in this process and with single-threaded BLAS, on one chunk of ``--reps``
replicates it times what the workflow's jobs do with a chunk (:func:`time_cell`): simulate + write;
for each of the 14 fit jobs read + sha256 (provenance) + replicate tables + fits + compact fit
table + write; the evaluation's reads, sha256s, metrics and write.
The projection adds the interpreter start + imports of every workflow job (measured in a child
process) for the workflow's job count (4 simulate, 14 x 4 fit, 4 evaluate: one per design and
method x design, each streaming the design's cell x chunk files; 1 aggregate, 8 figure jobs) and
divides by ``--cores``; the jobs are many more than the cores, so the division is a good model of
Snakemake's packing.

A same-process baseline, statsmodels MixedLM (REML, random intercept, the Q-ri model) on the
first (25, 25) replicate, is timed before and after; every time is also printed in baseline units
(``x MixedLM``), which stay comparable when the shared machine's load changes the seconds.
Targets (issue 14): all 14 estimators at (150, 150) < 0.25 s per replicate; the paper-scale study
< 15 min wall time on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from clusterhte import io, methods  # noqa: E402
from clusterhte.simulate import otr_designs  # noqa: E402
from clusterhte.stages import otr  # noqa: E402
from clusterhte.stages import fitting  # noqa: E402
from clusterhte.stages.fitting import limit_threads  # noqa: E402

# The same script times an older checkout (PYTHONPATH at its src) for an A/B: what it lacks is
# skipped (no allocator tuning, pyarrow's default Parquet settings, full fit tables).
SIM_PARQUET = getattr(otr, "SIM_PARQUET", None)
FIT_PARQUET = getattr(otr, "FIT_PARQUET", None)

PAPER_REPS = 500


CLOCK = time.perf_counter   # --clock cpu: time.process_time


def job_start_seconds(n: int = 3) -> float:
    """Median seconds for a child Python to start and import what a workflow job imports
    (wall clock; with --clock cpu the child's user + system CPU time)."""
    code = ("import snakemake.script, clusterhte.io, clusterhte.stages.otr, clusterhte.methods, "
            "clusterhte.methods.lasso, clusterhte.mixed.reml")
    ts = []
    for _ in range(n):
        c0 = os.times()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
        c1 = os.times()
        cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
        ts.append(cpu if CLOCK is time.process_time else time.perf_counter() - t0)
    return float(np.median(ts))


def mixedlm_baseline(train, reps: int = 5) -> float:
    from statsmodels.regression.mixed_linear_model import MixedLM

    X = np.column_stack([np.ones(train.n), train.X(), train.treatment,
                         train.X(["X3", "X4", "X5"]) * train.treatment[:, None]])
    ts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(reps):
            t0 = CLOCK()
            MixedLM(train.outcome, X, train.cluster).fit(reml=True)
            ts.append(CLOCK() - t0)
    return float(np.median(ts))


def write_sim(df, path):
    if SIM_PARQUET is None:
        return io.write_parquet(df, path, prov={})
    return io.write_parquet(df, path, prov={}, parquet=SIM_PARQUET)


def write_fit(table, path):
    if FIT_PARQUET is None:
        return io.write_table(table, path, prov={})
    return io.write_table(table, path, prov={}, parquet=FIT_PARQUET)


def time_cell(cell: str, reps: int, tmp: Path, names: list[str]) -> dict:
    """Seconds per replicate of each stage's work on one chunk of ``reps`` replicates of ``cell``,
    as the workflow jobs do it: the simulate job's chunk (simulate + write), each fit job's chunk
    (read + sha256 of the input for the provenance + replicate tables + fits + fit table + write),
    the evaluate job's chunk (read + sha256 of its 15 inputs + metrics + write)."""
    out = {}
    t0 = CLOCK()
    if hasattr(otr, "simulate_table"):
        sim = otr.simulate_table(cell, 0, reps, reps, seed=1)
        io.write_table(sim, tmp / "sim.parquet", prov={}, parquet=SIM_PARQUET)
    else:
        sim = otr.simulate(cell, 0, reps, reps, seed=1)
        write_sim(sim, tmp / "sim.parquet")
    out["simulate"] = CLOCK() - t0
    del sim
    t0 = CLOCK()
    reps_list = list(otr.iter_replicates(otr.read_sim(tmp / "sim.parquet")))
    out["read+tables"] = CLOCK() - t0
    # warm-up (numba compilation, first imports) on one replicate, not timed
    _, tr, te = reps_list[0]
    for m in names:
        methods.make(m, random_state=1).fit(tr).predict(te["test"])
    est_only = 0.0
    for _, tr, te in reps_list:
        t0 = CLOCK()
        for m in names:
            methods.make(m, random_state=1).fit(tr).predict(te["test"])
        est_only += CLOCK() - t0
    out["estimators"] = est_only
    del reps_list, tr, te
    t0 = CLOCK()
    with open(os.devnull, "w") as dn:
        for m in names:
            io.sha256_file(tmp / "sim.parquet")
            f = otr.fit_table(otr.read_sim(tmp / "sim.parquet"), cell, m, {}, 1, log=dn)
            write_fit(f, tmp / f"fit_{m}.parquet")
    out["fit jobs"] = CLOCK() - t0
    t0 = CLOCK()
    for f in [tmp / "sim.parquet", *(tmp / f"fit_{m}.parquet" for m in names)]:
        io.sha256_file(f)
    truth = otr.read_truth(tmp / "sim.parquet")
    fits = {m: otr.read_fit(tmp / f"fit_{m}.parquet") for m in names}
    ev = otr.evaluate(truth, fits)
    io.write_parquet(ev, tmp / "metrics.parquet", prov={})
    out["evaluate"] = CLOCK() - t0
    return {k: v / reps for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4, help="replicates timed per cell")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--designs", default="d1,d2,d3,d4")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: this process's CPU time (what an idle machine's wall time would be, "
                         "for a single-threaded process); wall: elapsed time")
    a = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    limit_threads(1)
    if hasattr(fitting, "keep_freed_memory"):
        fitting.keep_freed_memory()  # as every OTR workflow job does
    designs = a.designs.split(",")
    names = list(methods.OTR_METHODS)
    df = otr_designs.simulate_replicate("d1", 25, 25, np.random.default_rng(1))
    base_tr = otr_designs.trial_from_replicate(df, "train")
    base0 = mixedlm_baseline(base_tr)
    start = job_start_seconds()
    print(f"clock: {a.clock}; baseline: statsmodels MixedLM REML (Q-ri model) at (25, 25): {1e3 * base0:.1f} ms; "
          f"job start + imports: {start:.2f} s; load average {os.getloadavg()[0]:.1f}\n")
    cols = ["simulate", "read+tables", "estimators", "fit jobs", "evaluate"]
    print(f"{'cell':<15}" + "".join(f"{c:>13}" for c in cols) + f"{'path/rep':>10}{'x MixedLM':>10}")
    total_cpu = 0.0
    per_cell = {}
    with tempfile.TemporaryDirectory() as d:
        for design in designs:
            for J, n in otr_designs.SIZES:
                cell = otr_designs.cell_name(design, J, n)
                t = time_cell(cell, a.reps, Path(d), names)
                path = t["simulate"] + t["fit jobs"] + t["evaluate"]
                per_cell[cell] = (t, path)
                total_cpu += PAPER_REPS * path
                print(f"{cell:<15}" + "".join(f"{t[c]:>13.3f}" for c in cols) + f"{path:>10.3f}"
                      f"{path / base0:>10.1f}", flush=True)
    base1 = mixedlm_baseline(base_tr)
    n_cells = len(designs) * len(otr_designs.SIZES)
    scale = 16 / n_cells  # project the four designs from the ones timed
    n_jobs = 4 + 14 * 4 + 4 + 1 + 8
    cpu = total_cpu * scale + n_jobs * start
    wall = cpu / a.cores
    print("\nseconds per replicate; 'estimators' = the 14 fits + predictions alone (target at (150, 150): "
          "< 0.25 s); 'read+tables' = reading a chunk into replicate tables (once); 'fit jobs' = the 14 fit "
          "jobs' work (each: read, sha256, replicate tables, fits, fit table, write); 'path/rep' = "
          "simulate + fit jobs + evaluate (with its reads and sha256s)")
    for cell, (t, _) in per_cell.items():
        if cell.endswith("J150_n150"):
            print(f"  {cell}: all 14 estimators {t['estimators']:.3f} s per replicate "
                  f"({t['estimators'] / base0:.1f} x MixedLM)")
    print(f"\nprojected paper-scale study (16 cells x {PAPER_REPS} replicates x 14 estimators, {n_jobs} jobs):"
          f"\n  CPU {cpu / 60:.1f} min (of which job starts {n_jobs * start / 60:.1f} min); "
          f"wall on {a.cores} cores {wall / 60:.1f} min (target < 15 min)"
          f"\n  in baseline units: {cpu / base0:.0f} x MixedLM CPU")
    print(f"baseline before/after: {1e3 * base0:.1f} / {1e3 * base1:.1f} ms; "
          f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
