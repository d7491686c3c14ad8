"""CPU milliseconds per fit (fit + predict) of the REML Q-learning estimators on simulated
replicates, best of ``REP`` passes (default 3), one process, single-threaded BLAS.

    PYTHONPATH=src .venv/bin/python benchmarks/otr_reml_fits.py
    MS=q-rs,q-dm-rs CELLS=d1_J150_n25,d2_J25_n25 REP=5 \
        PYTHONPATH=src .venv/bin/python benchmarks/otr_reml_fits.py

Runs on older checkouts too: pointing PYTHONPATH at another ``src`` gives an A/B with the same
command (run the two back to back; the machine's load moves single runs by +-30 %).
"""
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from clusterhte import methods  # noqa: E402
from clusterhte.stages import otr  # noqa: E402
from clusterhte.stages.fitting import limit_threads  # noqa: E402

limit_threads(1)
cells = os.environ.get("CELLS", "d1_J150_n25,d2_J150_n25,d1_J25_n25,d2_J25_n150").split(",")
data = {c: list(otr.iter_replicates(otr.simulate(c, 0, 10, 10, seed=20231))) for c in cells}
methods.make("q-rs", {}, random_state=1).fit(data[cells[0]][0][1])  # numba caches, imports
for m in os.environ.get("MS", "q-rs,q-dm-rs,q-ri").split(","):
    best = []
    for c in cells:
        ts = []
        for _ in range(int(os.environ.get("REP", "3"))):
            t0 = time.process_time()
            for rep, train, preds in data[c]:
                est = methods.make(m, {}, random_state=1)
                est.fit(train)
                est.predict(preds["test"])
            ts.append(time.process_time() - t0)
        best.append(min(ts) / len(data[c]) * 1e3)
    print(m, " ".join(f"{c}:{b:.2f}ms" for c, b in zip(cells, best)), f"sum {sum(best):.2f}", flush=True)
