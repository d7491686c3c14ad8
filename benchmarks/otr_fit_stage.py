"""CPU ms per replicate of one OTR fit job's work (fit + predict, build the fit table, write it)
and of reading a simulated chunk into replicate tables, best of ``--repeat``.

    PYTHONPATH=src .venv/bin/python benchmarks/otr_fit_stage.py [--cells d1_J150_n150,d1_J25_n25]

Runs on any version of ``clusterhte.stages.otr`` (``fit_table`` + ``io.write_table`` when the
module has them, else ``fit`` + ``io.write_parquet``), so pointing PYTHONPATH at an older
checkout's ``src`` gives a same-machine A/B with the same command (best-of-k CPU time is far
steadier than the single-shot times of otr_paper_scale.py on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from clusterhte import io  # noqa: E402
from clusterhte.stages import otr  # noqa: E402
from clusterhte.stages.fitting import limit_threads  # noqa: E402
from timing import best_cpu_time as best  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="d1_J150_n150,d1_J25_n25")
    ap.add_argument("--methods", default="q-fe,w-aug,q-ri")
    ap.add_argument("--reps", type=int, default=50, help="replicates in the chunk (workflow: 50)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    limit_threads(1)
    new = hasattr(otr, "fit_table")
    sim_opts = {"parquet": otr.SIM_PARQUET} if hasattr(otr, "SIM_PARQUET") else {}
    fit_opts = {"parquet": otr.FIT_PARQUET} if hasattr(otr, "FIT_PARQUET") else {}
    from clusterhte.stages import fitting
    if hasattr(fitting, "keep_freed_memory"):
        fitting.keep_freed_memory()
    dn = open(os.devnull, "w")
    print(f"{'Arrow fit tables' if new else 'DataFrame fit tables'} ({otr.__file__}); "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as d:
        for cell in a.cells.split(","):
            path = Path(d) / f"{cell}.parquet"
            io.write_parquet(otr.simulate(cell, 0, a.reps, a.reps, seed=1), path, prov={}, **sim_opts)
            t = best(lambda: list(otr.iter_replicates(otr.read_sim(path))), 2 * a.repeat + 1)
            print(f"{cell} read + replicate tables: {1e3 * t / a.reps:.2f} ms per replicate")
            arrays = otr.read_sim(path)
            for m in a.methods.split(","):
                if new:
                    def job():
                        io.write_table(otr.fit_table(arrays, cell, m, {}, 1, log=dn), Path(d) / "f.parquet",
                                       prov={}, **fit_opts)
                else:
                    def job():
                        io.write_parquet(otr.fit(arrays, cell, m, {}, 1, log=dn), Path(d) / "f.parquet", prov={})
                job()  # warm-up: imports, numba caches
                print(f"{cell} {m}: fit + table + write {1e3 * best(job, a.repeat) / a.reps:.2f} ms per replicate",
                      flush=True)


if __name__ == "__main__":
    main()
