"""Seconds per CRT-CATE estimator for one replicate of 30 clusters x 20 (fit on the training
clusters, CATEs for them and for 50 new clusters) at the default (quick) configuration's settings,
and the linear mixed model baseline against statsmodels MixedLM on the same data.

    .venv/bin/python benchmarks/crt_replicate.py [--config config/config.yaml] [--paper]

``--paper`` uses the paper-scale settings of config/methods.yaml instead of the quick overrides.
Target: all eleven together under 60 s on 2 cores at the default settings.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from clusterhte import config as chconfig, methods  # noqa: E402
from clusterhte.simulate import crt_designs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--methods-config", default="config/methods.yaml")
    ap.add_argument("--paper", action="store_true", help="paper-scale settings (no quick overrides)")
    ap.add_argument("--cell", default="M30_s20_icc0.2_f0lin_taulin")
    a = ap.parse_args()
    cfg = chconfig.load_yaml(a.config)
    mcfg = chconfig.load_yaml(a.methods_config)
    study = {} if a.paper else cfg.get("crt", {})
    df = crt_designs.simulate_chunk(a.cell, 1, [0])
    train = crt_designs.trial_from_replicate(df, "train")
    test = crt_designs.trial_from_replicate(df, "test")
    tau = df.loc[df["split"] == "train", "tau"].to_numpy()
    print(f"One replicate of {a.cell}: {train.n} training rows in 30 clusters, {test.n} rows in new clusters")
    print(f"settings: {'paper scale (config/methods.yaml)' if a.paper else a.config + ' (quick overrides)'}\n")
    print(f"{'method':<10} {'seconds':>8} {'PEHE in':>8}")
    total = 0.0
    for name in methods.CRT_METHODS:
        params = chconfig.method_params(mcfg, study, name)
        t0 = time.perf_counter()
        est = methods.make(name, params, random_state=1).fit(train)
        r_in = est.predict(train)
        est.predict(test)
        t = time.perf_counter() - t0
        total += t
        print(f"{name:<10} {t:>8.2f} {np.sqrt(np.mean((r_in.point - tau) ** 2)):>8.3f}", flush=True)
    print(f"{'all 11':<10} {total:>8.2f}   (target < 60 s)\n")

    from statsmodels.regression.mixed_linear_model import MixedLM

    est = methods.make("lmm", random_state=1)
    t0 = time.perf_counter()
    for _ in range(20):
        est.fit(train)
    ours = (time.perf_counter() - t0) / 20
    f = train.frame
    X = np.column_stack([np.ones(train.n), train.treatment, train.X(), train.X() * train.treatment[:, None]])
    t0 = time.perf_counter()
    for _ in range(20):
        MixedLM(train.outcome, X, f["cluster"].to_numpy()).fit(reml=True)
    sm = (time.perf_counter() - t0) / 20
    print(f"lmm (REML, random intercept) {1e3 * ours:.1f} ms; statsmodels MixedLM {1e3 * sm:.1f} ms; "
          f"ratio statsmodels/ours {sm / ours:.1f}")


if __name__ == "__main__":
    main()
