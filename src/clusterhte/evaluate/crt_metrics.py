"""Metrics of the CRT-CATE simulation (spec ``crt_cate.md`` §4.4) and their summary over replicates.

Per replicate and method, with tau the true CATE, tau_hat the point estimate and [L, U] the 95%
interval of each row:

- ``pehe_in``  = sqrt(mean (tau_hat − tau)²) over the training rows (in-sample);
- ``pehe_out`` = the same over the rows of the new test clusters (out-of-sample);
- ``bias`` = mean(tau_hat − tau) and ``abs_bias`` = |bias| (training rows);
- ``ate_error`` = ATE_hat − mean(tau), the method's ATE of the training rows against the sample
  ATE; ``ate_covered`` = 1{ATE_L ≤ mean(tau) ≤ ATE_U} (NaN when the method gives no ATE interval);
- ``coverage`` = mean 1{L ≤ tau ≤ U} and ``width`` = mean(U − L) (training rows; NaN when any
  training row lacks an interval); ``coverage_out`` and ``width_out``: the same on the test rows;
- ``cluster_pehe`` = PEHE of the cluster-average CATEs tau_C,i = mean_j tau_ij over the training
  clusters (each cluster weighted equally);
- ``seconds`` = wall-clock seconds of the fit; ``failed`` = 1 when the fit raised.

A failed replicate records ``failed = 1`` and ``seconds``; every other metric is NaN.

The paper's metric code is not public; these follow the spec's definitions. ``runtime_s`` of the
spec is stored as ``seconds``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("pehe_in", "pehe_out", "bias", "abs_bias", "ate_error", "ate_covered", "coverage", "width",
           "coverage_out", "width_out", "cluster_pehe", "seconds", "failed")
FIT_REQUIRED = ("rep", "split", "row", "cate", "lower", "upper", "seconds", "failed",
                "ate", "ate_lower", "ate_upper")
TRUTH_REQUIRED = ("rep", "split", "row", "tau", "cluster")
CELL_KEYS = ("cell", "M", "size", "icc", "f0", "tau")


def _check(df: pd.DataFrame, need, what: str) -> None:
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; present: {list(df.columns)}")


def _nan_strict_mean(values: pd.Series, keys) -> pd.Series:
    """Group mean that is NaN when any value of the group is NaN."""
    g = values.groupby(keys, sort=True)
    return g.mean().where(g.count() == g.size())


def replicate_metrics(fits: pd.DataFrame, truth: pd.DataFrame, method: str | None = None) -> pd.DataFrame:
    """Long table ``rep, method, metric, value`` of one method's fits on one cell's chunk.

    ``fits``: the fit stage's table (``rep, split, row, cate, lower, upper, seconds, failed, ate,
    ate_lower, ate_upper``; the ATE columns repeated on each row of a (rep, split)).
    ``truth``: the simulated chunk (``rep, split, row, tau, cluster``; ``row`` the 0-based position
    within its (rep, split)). ``method``: the name to record; default the ``method`` column of ``fits``.
    """
    _check(fits, FIT_REQUIRED, "fits table")
    _check(truth, TRUTH_REQUIRED, "simulation truth table")
    if method is None:
        if "method" not in fits.columns or fits["method"].nunique() != 1:
            raise ValueError("replicate_metrics: pass method=..., or give fits one 'method' value")
        method = str(fits["method"].iloc[0])
    t = truth[list(TRUTH_REQUIRED)]
    f = fits[list(FIT_REQUIRED)].merge(t, on=["rep", "split", "row"], how="left", validate="one_to_one",
                                       indicator=True)
    orphan = f["_merge"] != "both"
    if orphan.any():
        bad = f.loc[orphan, ["rep", "split", "row"]].head(5).to_dict("records")
        raise ValueError(f"fits rows without simulation truth, e.g. {bad}: the fit and simulation "
                         "chunks do not match")
    f = f.drop(columns="_merge")
    reps = pd.Index(np.sort(f["rep"].unique()), name="rep")
    failed = f.groupby("rep")["failed"].max().astype(float).reindex(reps)
    seconds = f.groupby("rep")["seconds"].first().astype(float).reindex(reps)

    ok = f[~f["rep"].map(failed).astype(bool)].copy()
    ok["err"] = ok["cate"] - ok["tau"]
    ok["sq"] = ok["err"] ** 2
    ok["cov"] = ((ok["lower"] <= ok["tau"]) & (ok["tau"] <= ok["upper"])).astype(float)
    no_int = ok["lower"].isna() | ok["upper"].isna()
    ok.loc[no_int, "cov"] = np.nan
    ok["wid"] = ok["upper"] - ok["lower"]
    tr, te = ok[ok["split"] == "train"], ok[ok["split"] == "test"]

    out = {"failed": failed, "seconds": seconds}
    out["pehe_in"] = np.sqrt(tr.groupby("rep")["sq"].mean())
    out["pehe_out"] = np.sqrt(te.groupby("rep")["sq"].mean())
    out["bias"] = tr.groupby("rep")["err"].mean()
    out["abs_bias"] = out["bias"].abs()
    g = tr.groupby("rep")
    true_ate = g["tau"].mean()
    ate = g["ate"].first()
    out["ate_error"] = ate - true_ate
    lo, hi = g["ate_lower"].first(), g["ate_upper"].first()
    out["ate_covered"] = ((lo <= true_ate) & (true_ate <= hi)).astype(float).where(lo.notna() & hi.notna())
    out["coverage"] = _nan_strict_mean(tr["cov"], tr["rep"])
    out["width"] = _nan_strict_mean(tr["wid"], tr["rep"])
    out["coverage_out"] = _nan_strict_mean(te["cov"], te["rep"])
    out["width_out"] = _nan_strict_mean(te["wid"], te["rep"])
    cl = tr.groupby(["rep", "cluster"])[["cate", "tau"]].mean()
    out["cluster_pehe"] = np.sqrt(((cl["cate"] - cl["tau"]) ** 2).groupby(level="rep").mean())

    wide = pd.DataFrame({k: pd.Series(v, dtype=float).reindex(reps) for k, v in out.items()},
                        index=reps)[list(METRICS)]
    long = wide.reset_index().melt(id_vars="rep", var_name="metric", value_name="value")
    long.insert(1, "method", method)
    long["rep"] = long["rep"].astype("int64")
    long["value"] = long["value"].astype(float)
    return long.sort_values(["rep", "metric"], kind="stable").reset_index(drop=True)[
        ["rep", "method", "metric", "value"]]


def aggregate(metrics: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Summary over replicates per (cell, method, metric).

    Columns: the group keys, ``mean``, ``sd``, ``mcse`` (= sd / sqrt(n_reps)), ``n_reps`` (the
    number of replicates with a non-missing value, the R of the MCSE) and ``n_failed`` (failed
    replicates of that cell and method). ``by``: the cell keys; default those of
    ``cell, M, size, icc, f0, tau`` present in ``metrics``.
    """
    _check(metrics, ("rep", "method", "metric", "value"), "metrics table")
    by = [c for c in CELL_KEYS if c in metrics.columns] if by is None else list(by)
    keys = by + ["method", "metric"]
    g = metrics.groupby(keys, sort=True, dropna=False)["value"]
    out = g.agg(mean="mean", sd="std", n_reps="count").reset_index()
    out["mcse"] = out["sd"] / np.sqrt(out["n_reps"].where(out["n_reps"] > 0))
    fails = metrics[metrics["metric"] == "failed"]
    nf = ((fails["value"] > 0).groupby([fails[k] for k in by + ["method"]], sort=True, dropna=False)
          .sum().rename("n_failed").reset_index())
    out = out.merge(nf, on=by + ["method"], how="left")
    out["n_failed"] = out["n_failed"].fillna(0).astype("int64")
    out["n_reps"] = out["n_reps"].astype("int64")
    return out[keys + ["mean", "sd", "mcse", "n_reps", "n_failed"]]
