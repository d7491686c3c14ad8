"""The OTR study through the workflow's stage functions in one process (no job starts, no
Parquet), for a reduced number of replicates: writes the aggregate stage's summary and
congruence tables, which benchmarks/otr_reproduction_table.py formats.

    PYTHONPATH=src .venv/bin/python benchmarks/otr_study_inprocess.py [--replicates 20] [--out DIR]

Same seed (20231, config/paper.yaml), simulator, estimators and metrics as the workflow; the
replicates are the first ``--replicates`` of each cell (the workflow's chunk 0 when
``--replicates <= 50``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from clusterhte import methods  # noqa: E402
from clusterhte.simulate import otr_designs  # noqa: E402
from clusterhte.stages import otr  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=20)
    ap.add_argument("--seed", type=int, default=20231)
    ap.add_argument("--designs", default="d1,d2,d3,d4")
    ap.add_argument("--out", default="results/tables/inprocess")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    chunks = {}
    c0, w0 = time.process_time(), time.perf_counter()
    for d in a.designs.split(","):
        for J, n in otr_designs.SIZES:
            cell = otr_designs.cell_name(d, J, n)
            sim = otr.simulate(cell, 0, a.replicates, a.replicates, a.seed)
            fits = {m: otr.fit(sim, cell, m, {}, a.seed, log=open(os.devnull, "w"))
                    for m in methods.OTR_METHODS}
            chunks[cell] = [otr.evaluate(sim, fits)]
            print(f"{cell}: CPU {time.process_time() - c0:.0f} s, wall {time.perf_counter() - w0:.0f} s",
                  flush=True)
    tables = otr.tables(otr.collect(chunks))
    tables["summary"].to_csv(out / "otr_summary.csv", index=False)
    tables["congruence"].to_parquet(out / "otr_congruence.parquet")
    print(f"wrote {out}/otr_summary.csv and otr_congruence.parquet")


if __name__ == "__main__":
    main()
