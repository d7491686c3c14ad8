"""Our REML mixed model (`clusterhte.mixed.reml.fit_lmm`) against statsmodels `MixedLM` on the same
data: J = 25 clusters x 150 rows, a random intercept and a correlated random intercept + slope.

    .venv/bin/python benchmarks/reml_vs_statsmodels.py [--reps 20] [--J 25] [--n 150]

Prints, for each model, the median seconds of each fit, the ratio statsmodels / ours, and the
largest differences in fixed effects, variance components and REML log-likelihood.
"""

from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from statsmodels.regression.mixed_linear_model import MixedLM  # noqa: E402

from clusterhte.mixed.reml import fit_lmm  # noqa: E402
from timing import median_time  # noqa: E402


def simulate(J: int, n: int, seed: int = 1):
    """Multisite-like data: 5 covariates, 0/1 treatment, random intercept (sd 1.5), slope (sd 0.5)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(J), n)
    N = J * n
    x = rng.normal(size=(N, 5))
    trt = rng.binomial(1, 0.5, N).astype(float)
    X = np.column_stack([np.ones(N), x, trt, x[:, 2:5] * trt[:, None]])
    beta = np.array([0.7, 1, 1, -2, 1, 0.5, 0.2, 0.5, -0.2, -0.2])
    b0, b1 = rng.normal(0, 1.5, J), rng.normal(0, 0.5, J)
    y = X @ beta + b0[g] + b1[g] * trt + rng.normal(size=N)
    return y, X, g, np.column_stack([np.ones(N), trt])



def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--J", type=int, default=25)
    ap.add_argument("--n", type=int, default=150)
    a = ap.parse_args()
    y, X, g, Z = simulate(a.J, a.n)
    print(f"J = {a.J} clusters x {a.n} rows, p = {X.shape[1]} fixed effects; median of {a.reps} fits\n")
    print(f"{'model':<26} {'ours (s)':>10} {'statsmodels (s)':>16} {'ratio':>7} "
          f"{'max|d beta|':>12} {'max|d G|':>10} {'d llf':>9}")
    for label, z in (("random intercept", None), ("random intercept + slope", Z)):
        ours = fit_lmm(y, X, g, z)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sm = MixedLM(y, X, g, exog_re=z).fit(reml=True)
            t_sm = median_time(lambda: MixedLM(y, X, g, exog_re=z).fit(reml=True), max(3, a.reps // 4))
        t_ours = median_time(lambda: fit_lmm(y, X, g, z), a.reps)
        d_beta = np.max(np.abs(ours.beta - sm.fe_params))
        d_G = np.max(np.abs(ours.G - np.asarray(sm.cov_re)))
        print(f"{label:<26} {t_ours:>10.4f} {t_sm:>16.4f} {t_sm / t_ours:>6.1f}x "
              f"{d_beta:>12.2e} {d_G:>10.2e} {ours.llf - sm.llf:>9.2e}")


if __name__ == "__main__":
    main()
