"""Seconds per CRT-CATE estimator for one replicate of 30 clusters x 20 (fit on the training
clusters, CATEs for them and for 50 new clusters), each also as a ratio to a same-process baseline
(statsmodels MixedLM, REML random intercept, on the same data), so the numbers compare across
runs on a loaded machine; and our LMM against that baseline.

    .venv/bin/python benchmarks/crt_replicate.py [--settings quick|paper] [--methods cf,merf] [--save F.npz]
        [--threads N] [--chains C]

Imports and the numba compilation (mixed-model kernels, BART treatment-tree contrasts) happen before the timings (a fit job
pays them once for its chunk of replicates). Each method is timed on the wall clock and on the
process's CPU clock (``time.process_time``; on a shared machine the CPU seconds are the stable
number). ``--save`` writes every method's point and
interval on the training and the new-cluster rows to an ``.npz`` file, so that two versions of the
code can be compared estimate for estimate (``--compare`` prints the largest differences against
such a file).

``--settings quick`` (default): config/methods.yaml with the quick overrides of ``--config``
(config/config.yaml). ``--settings paper``: config/methods.yaml with the ``crt`` overrides of
config/paper.yaml (the paper's MCMC lengths and bootstrap sizes; ``--paper`` is the same).
Target (issue 14): all eleven under 60 s on one core at the paper settings.

``--threads N`` (N > 1): every method that takes ``n_threads`` is fitted twice in this process, at
``n_threads = 1`` and at ``n_threads = N``; the table gives both wall times, the CPU seconds of the
N-thread fit (this process and its worker processes) and the wall-time speedup, and checks that
the two fits give the same estimates (``max |diff|``, expected 0). ``--save`` / ``--compare`` use
the 1-thread estimates. The machine's parallel capacity (the speedup of pure CPU work on N
processes, timed before and after) is printed too: on a shared machine a method's speedup can only
be judged against it. Threads shorten the wall time of a fit job; the CPU seconds (the one-core
figure) do not fall.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import warnings  # noqa: E402

import numpy as np  # noqa: E402

from clusterhte import config as chconfig, methods  # noqa: E402
from clusterhte.simulate import crt_designs  # noqa: E402


def _burn(_) -> int:
    s = 0
    for i in range(3_000_000):
        s += i
    return s


def parallel_capacity(n: int) -> float:
    """Wall-time speedup of ``2 n`` pure-Python CPU tasks on ``n`` forked processes over running
    them one after another: the most any method can gain from ``n`` threads on this machine at
    this moment (about ``n`` on an idle machine, about 1 when other jobs hold the cores)."""
    from clusterhte.methods.bootstrap import parallel_map

    t0 = time.perf_counter()
    parallel_map(_burn, range(2 * n), 1)
    t1 = time.perf_counter()
    parallel_map(_burn, range(2 * n), n, processes=True)
    return (t1 - t0) / (time.perf_counter() - t1)


def max_abs_diff(u: np.ndarray, v: np.ndarray) -> float:
    """Largest |u - v|, NaN where both are NaN counting as equal (inf if only one is NaN)."""
    both = np.isnan(u) & np.isnan(v)
    d = np.where(both, 0.0, np.abs(u - v))
    return float(np.max(np.where(np.isnan(d), np.inf, d))) if d.size else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--paper-config", default="config/paper.yaml")
    ap.add_argument("--methods-config", default="config/methods.yaml")
    ap.add_argument("--settings", choices=["quick", "paper"], default="quick")
    ap.add_argument("--paper", action="store_true", help="same as --settings paper")
    ap.add_argument("--methods", default=None, help="comma-separated subset (default: all eleven)")
    ap.add_argument("--cell", default="M30_s20_icc0.2_f0lin_taulin")
    ap.add_argument("--baseline-reps", type=int, default=20)
    ap.add_argument("--save", default=None, help="write the estimates to this .npz file")
    ap.add_argument("--compare", default=None, help="compare the estimates with this .npz file")
    ap.add_argument("--threads", type=int, default=1,
                    help="also fit with n_threads=N and report the wall-time speedup over n_threads=1")
    ap.add_argument("--chains", type=int, default=None,
                    help="num_chains of ribart, mixedbart, stan4bart and mbcf (default: the settings')")
    a = ap.parse_args()
    if a.chains is not None and a.chains < 1:
        raise SystemExit(f"--chains must be >= 1, got {a.chains}")
    if a.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {a.threads}")
    paper = a.paper or a.settings == "paper"
    mcfg = chconfig.load_yaml(a.methods_config)
    study = (chconfig.load_yaml(a.paper_config).get("crt", {}) if paper
             else chconfig.load_yaml(a.config).get("crt", {}))
    names = a.methods.split(",") if a.methods else list(methods.CRT_METHODS)
    unknown = [m for m in names if m not in methods.CRT_METHODS]
    if unknown:
        raise SystemExit(f"unknown CRT method(s) {unknown}; known: {list(methods.CRT_METHODS)}")
    df = crt_designs.simulate_chunk(a.cell, 1, [0])
    train = crt_designs.trial_from_replicate(df, "train")
    test = crt_designs.trial_from_replicate(df, "test")
    tau = df.loc[df["split"] == "train", "tau"].to_numpy()
    print(f"One replicate of {a.cell}: {train.n} training rows in 30 clusters, {test.n} rows in new clusters")
    print(f"settings: {'paper scale (' + a.paper_config + ' crt overrides)' if paper else a.config + ' (quick overrides)'}")

    from statsmodels.regression.mixed_linear_model import MixedLM

    f = train.frame
    X = np.column_stack([np.ones(train.n), train.treatment, train.X(), train.X() * train.treatment[:, None]])

    def baseline() -> float:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(a.baseline_reps):
                MixedLM(train.outcome, X, f["cluster"].to_numpy()).fit(reml=True)
        return (time.perf_counter() - t0) / a.baseline_reps

    base0 = baseline()
    print(f"baseline: statsmodels MixedLM REML fit {1e3 * base0:.1f} ms (timed before and after)\n")
    # imports and numba compilation outside the timings: a fit job pays them once for its chunk of
    # replicates (25 at the paper scale), not per replicate
    import importlib

    for lib in ("stochtree", "econml.grf", "sklearn.ensemble", "lightgbm", "gpboost", "scipy.stats"):
        importlib.import_module(lib)
    for name in names:
        methods.get(name)
    methods.make("lmm", random_state=1).fit(train)
    if {"ribart", "mixedbart", "stan4bart"} & set(names):   # the BART treatment-tree kernel
        methods.make("ribart", dict(num_trees=5, num_burnin=5, num_mcmc=5, num_chains=1, keep_every=1),
                     random_state=1).fit(train).predict(train)

    def run(name, params):
        t0, c0, ch0 = time.perf_counter(), time.process_time(), os.times()
        est = methods.make(name, params, random_state=1).fit(train)
        r_in = est.predict(train)
        r_out = est.predict(test)
        ch1 = os.times()
        cpu = time.process_time() - c0 + (ch1.children_user - ch0.children_user) + (ch1.children_system
                                                                                    - ch0.children_system)
        return time.perf_counter() - t0, cpu, r_in, r_out

    def estimates(r_in, r_out):
        return {f"{part}/{k}": np.asarray(getattr(r, k), float) for part, r in (("in", r_in), ("out", r_out))
                for k in ("point", "lower", "upper")}

    N = a.threads
    cap0 = parallel_capacity(N) if N > 1 else 1.0
    head = f"{'method':<10} {'seconds':>8} {'CPU s':>8} {'x baseline':>11} {'PEHE in':>8}"
    if N > 1:
        head += f" {f'wall {N}t':>8} {f'CPU {N}t':>8} {'speedup':>8} {'max|diff|':>10}"
    print(head)
    total = total_cpu = total_n = total_cpu_n = 0.0
    saved = {}
    for name in names:
        params = chconfig.method_params(mcfg, study, name)
        if a.chains is not None and "num_chains" in params:
            params["num_chains"] = a.chains
        if "n_threads" in methods.get(name).param_names():
            params = {**params, "n_threads": 1}
        t, c, r_in, r_out = run(name, params)
        total += t
        total_cpu += c
        e1 = estimates(r_in, r_out)
        saved.update({f"{name}/{k}": v for k, v in e1.items()})
        line = f"{name:<10} {t:>8.2f} {c:>8.2f} {t / base0:>11.2f} {np.sqrt(np.mean((r_in.point - tau) ** 2)):>8.3f}"
        if N > 1:
            if "n_threads" in params:
                tn, cn, *rn = run(name, {**params, "n_threads": N})
                en = estimates(*rn)
                diff = max(max_abs_diff(v, en[k]) for k, v in e1.items())
                line += f" {tn:>8.2f} {cn:>8.2f} {t / tn:>8.2f} {diff:>10.3g}"
            else:
                tn, cn = t, c
                line += f" {'-':>8} {'-':>8} {'-':>8} {'-':>10}"
            total_n += tn
            total_cpu_n += cn
        print(line, flush=True)
    base1 = baseline()
    base = 0.5 * (base0 + base1)
    line = f"{'all ' + str(len(names)):<10} {total:>8.2f} {total_cpu:>8.2f} {total / base:>11.2f} {'':>8}"
    if N > 1:
        line += f" {total_n:>8.2f} {total_cpu_n:>8.2f} {total / total_n:>8.2f}"
        cap1 = parallel_capacity(N)
        line += (f"\nparallel capacity of this machine for {N} workers (pure-Python CPU tasks in {N} processes "
                 f"against one after another), before/after: {cap0:.2f} / {cap1:.2f}; "
                 f"{os.getloadavg()[0]:.1f} load average at the end")
    print(line + "\n(target for all 11 at paper settings: < 60 s on one core; threads shorten the wall time, "
          "not the CPU seconds)")
    if a.chains is not None:
        print(f"num_chains = {a.chains} for the BART family and MBCF")
    if a.save:
        np.savez(a.save, **saved)
        print(f"estimates written to {a.save}")
    if a.compare:
        ref = np.load(a.compare)
        print(f"\nlargest absolute difference from {a.compare} (point / lower / upper, all rows):")
        for name in names:
            d = [max(float(np.nanmax(np.abs(saved[f"{name}/{p}/{k}"] - ref[f"{name}/{p}/{k}"])))
                     if f"{name}/{p}/{k}" in ref and np.isfinite(saved[f"{name}/{p}/{k}"]).any() else float("nan")
                     for p in ("in", "out")) for k in ("point", "lower", "upper")]
            print(f"{name:<10} " + " ".join(f"{x:>10.3g}" for x in d))
    print(f"baseline before/after: {1e3 * base0:.1f} / {1e3 * base1:.1f} ms\n")

    est = methods.make("lmm", random_state=1)
    t0 = time.perf_counter()
    for _ in range(20):
        est.fit(train)
    ours = (time.perf_counter() - t0) / 20
    sm = base
    print(f"lmm (REML, random intercept) {1e3 * ours:.1f} ms; statsmodels MixedLM {1e3 * sm:.1f} ms; "
          f"ratio statsmodels/ours {sm / ours:.1f}")


if __name__ == "__main__":
    main()
