"""CPU seconds of one OTR fit job's work or one evaluate job's work on a design's simulated chunks,
done as the workflow scripts do it (provenance with input sha256, chunk reads, replicate tables,
fits, fit-table writes), in this process, without Snakemake.

    # in a checkout whose results/sim/otr/ holds a design's chunks (e.g. after
    #   snakemake --cores 1 results/sim/otr/d1_J25_n25/chunk0.parquet --configfile benchmarks/paper_otr.yaml)
    PYTHONPATH=src .venv/bin/python benchmarks/otr_job_cpu.py --design d1 --methods q-base,q-rs
    PYTHONPATH=src .venv/bin/python benchmarks/otr_job_cpu.py --design d1 --evaluate --chunks 1

Fit tables go to a temporary folder (``--out`` to keep them; ``--evaluate`` reads the ones in
``--fits``). Runs on older checkouts too (what they lack is skipped), so pointing PYTHONPATH at
another ``src`` gives an A/B with the same command. With ``--repeat 2`` the second pass shows the
steady state of the sha256 records (the first job that hashes a chunk records it).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from clusterhte import io  # noqa: E402
from clusterhte.stages import otr  # noqa: E402
from clusterhte.stages import fitting  # noqa: E402

SIZES = [(25, 25), (25, 150), (150, 25), (150, 150)]
METHODS = ["q-base", "q-fe", "q-ri", "q-rs", "q-dm", "q-dm-ri", "q-dm-rs", "w-base", "w-noaug",
           "w-aug", "w-augid", "ws-noaug", "ws-aug", "ws-augid"]


def cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def provenance(**kw):
    try:
        return fitting.chunk_provenance(record_sha256=True, **kw)
    except TypeError:  # older checkouts
        return fitting.chunk_provenance(**kw)


def fit_job(root: Path, design: str, method: str, chunks: int, out: Path, seed: int = 20231):
    cfg = {"method": method, "hyperparameters": {}, "wildcards": {"method": method, "design": design}}
    prov = provenance(rule="otr_fit", config=cfg, seed=seed)
    dn = open(os.devnull, "w")
    for J, n in SIZES:
        cell = f"{design}_J{J}_n{n}"
        for k in range(chunks):
            src = root / f"results/sim/otr/{cell}/chunk{k}.parquet"
            dst = out / method / cell / f"chunk{k}.parquet"
            table = otr.fit_table(otr.read_sim(src), cell, method, {}, seed, log=dn, threads=1)
            io.write_table(table, dst, prov=prov([src], output=str(dst)), parquet=otr.FIT_PARQUET)


def evaluate_job(root: Path, design: str, chunks: int, fits: Path, out: Path):
    prov = provenance(rule="otr_evaluate", config={"rank_correlation": "spearman"})
    for J, n in SIZES:
        cell = f"{design}_J{J}_n{n}"
        for k in range(chunks):
            sim_path = root / f"results/sim/otr/{cell}/chunk{k}.parquet"
            fit_paths = [fits / m / cell / f"chunk{k}.parquet" for m in METHODS]
            fits_ = {m: otr.read_fit(f) for m, f in zip(METHODS, fit_paths)}
            res = otr.evaluate(otr.read_truth(sim_path), fits_)
            io.write_parquet(res, out / cell / f"chunk{k}.parquet", prov=prov([sim_path, *fit_paths]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="checkout holding results/sim/otr")
    ap.add_argument("--design", default="d1")
    ap.add_argument("--methods", default="q-base,q-rs")
    ap.add_argument("--chunks", type=int, default=10, help="chunks per cell (the study: 10)")
    ap.add_argument("--evaluate", action="store_true", help="time the evaluate job instead")
    ap.add_argument("--fits", default=None, help="fit tables for --evaluate (default: fit them first)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    fitting.limit_threads(1)
    if hasattr(fitting, "keep_freed_memory"):
        fitting.keep_freed_memory()
    root = Path(a.root)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out or tmp)
        print(f"{otr.__file__}; load average {os.getloadavg()[0]:.1f}")
        if a.evaluate:
            fits = Path(a.fits) if a.fits else out / "fits"
            if not a.fits:
                for m in METHODS:
                    fit_job(root, a.design, m, a.chunks, fits)
            jobs = [("evaluate", lambda: evaluate_job(root, a.design, a.chunks, fits, out / "metrics"))]
        else:
            jobs = [(m, lambda m=m: fit_job(root, a.design, m, a.chunks, out / "fits"))
                    for m in a.methods.split(",")]
        for r in range(a.repeat):
            for name, job in jobs:
                u0, s0 = cpu()
                t0 = time.perf_counter()
                job()
                u1, s1 = cpu()
                print(f"pass {r + 1} {name}: {u1 - u0 + s1 - s0:.2f} s CPU ({u1 - u0:.2f} user + "
                      f"{s1 - s0:.2f} system), {time.perf_counter() - t0:.2f} s wall", flush=True)


if __name__ == "__main__":
    main()
