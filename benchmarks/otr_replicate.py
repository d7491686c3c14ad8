"""Per-estimator time of one multisite-OTR replicate at (J, n) = (25, 150), and our REML against
statsmodels MixedLM on the same data, measured in this process.

    .venv/bin/python benchmarks/otr_replicate.py [--reps 15] [--J 25] [--n 150]

Prints the median fit+predict seconds per estimator, their total (target: < 0.100 s for all 14),
and median seconds and the ratio statsmodels / ours for the random-intercept and the
random-intercept-and-slope fits of Q-ri and Q-rs.
"""

from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from clusterhte import methods  # noqa: E402
from clusterhte.mixed.reml import fit_lmm  # noqa: E402
from clusterhte.simulate import otr_designs  # noqa: E402
from timing import median_time  # noqa: E402



def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--J", type=int, default=25)
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--design", default="d1")
    a = ap.parse_args()
    df = otr_designs.simulate_replicate(a.design, a.J, a.n, np.random.default_rng(1))
    train = otr_designs.trial_from_replicate(df, "train")
    test = otr_designs.trial_from_replicate(df, "test")

    print(f"One replicate of design {a.design} at (J, n) = ({a.J}, {a.n}); median of {a.reps} runs\n")
    print(f"{'estimator':<10} {'fit+predict (ms)':>17}")
    total = 0.0
    for name in methods.OTR_METHODS:
        def run(name=name):
            methods.make(name, random_state=1).fit(train).predict(test)
        run()  # warm-up (numba compilation, imports)
        t = median_time(run, a.reps)
        total += t
        print(f"{name:<10} {1e3 * t:>17.2f}")
    print(f"{'all 14':<10} {1e3 * total:>17.2f}   (target < 100 ms)\n")

    from statsmodels.regression.mixed_linear_model import MixedLM

    y = train.outcome
    trt = train.treatment
    Xm = train.X(["X3", "X4", "X5"])
    X = np.column_stack([np.ones(train.n), train.X(), trt, Xm * trt[:, None]])
    g = train.cluster
    Z = np.column_stack([np.ones(train.n), trt])
    print(f"{'REML fit':<28} {'ours (ms)':>10} {'statsmodels (ms)':>17} {'ratio':>7}")
    for label, z in (("random intercept (Q-ri)", None), ("intercept + slope (Q-rs)", Z)):
        ours = median_time(lambda: fit_lmm(y, X, g, z), a.reps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sm = median_time(lambda: MixedLM(y, X, g, exog_re=z).fit(reml=True), max(3, a.reps // 3))
        print(f"{label:<28} {1e3 * ours:>10.2f} {1e3 * sm:>17.2f} {sm / ours:>6.1f}x")


if __name__ == "__main__":
    main()
