"""Write the simulated replicates (and fold labels) that glmnet_reference.R fits with glmnet.

    PYTHONPATH=src .venv/bin/python tests/data/glmnet/make_data.py
    Rscript tests/data/glmnet/glmnet_reference.R      # R 4.2, glmnet 4.1-6

Design 1-4 replicates at (J, n) = (25, 25) from clusterhte's simulator; fold labels as R's
cv.glmnet draws them (sample(rep(1:5, length = n))), here from numpy. Values are written with 12
significant digits and read back by both R and the test, so both fit the same numbers.
"""
from pathlib import Path

import numpy as np
import pandas as pd

from clusterhte.simulate import otr_designs

HERE = Path(__file__).resolve().parent
CASES = [("d1", 0), ("d1", 1), ("d2", 0), ("d3", 0), ("d4", 0)]

parts = []
for design, rep in CASES:
    rng = np.random.default_rng([20231127, int(design[1]), rep])
    df = otr_designs.simulate_replicate(design, 25, 25, rng)
    df = df[["split", "row", "cluster", "treatment", "outcome", "X1", "X2", "X3", "X4", "X5"]].copy()
    ntr = int((df["split"] == "train").sum())
    fold = np.zeros(len(df), dtype=int)
    fold[(df["split"] == "train").to_numpy()] = rng.permutation(np.resize(np.arange(1, 6), ntr))
    df.insert(0, "case", f"{design}_{rep}")
    df["foldid"] = fold
    parts.append(df)
out = pd.concat(parts, ignore_index=True)
out.to_csv(HERE / "otr_replicates.csv.gz", index=False, float_format="%.12g")
print(out.shape)
