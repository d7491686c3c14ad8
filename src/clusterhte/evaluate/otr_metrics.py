"""Metrics of the multisite-OTR simulation (Suk & Park 2023, Section 5; spec §3.4).

Per replicate, on the test set, with the true optimal decision d* = 1{Δ > 0} and the estimated
decision d̂ = 1{score > 0}:

- ``accuracy`` = mean(d̂ == d*);
- ``f1`` = 2TP / (2TP + FP + FN), positive class "treat" (0 when TP + FP + FN = 0 cannot happen
  unless nobody should or does get treated; then F1 is undefined and NaN is recorded);
- ``rank_corr`` = Spearman (default) or Kendall correlation of the score with the true Δ;
- ``auc`` = ROC-AUC of the continuous score for d* (Mann–Whitney statistic, ties counted ½);
- ``share_treated`` = mean(d̂);
- congruence between methods a and b = mean(d̂_a == d̂_b) (paper Figures 2, 4, 7), stored with
  ``metric = "congruence"`` and the other method in column ``other``.

The authors' repository contains no metric code; these follow the paper's definitions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

METRICS = ("accuracy", "f1", "rank_corr", "auc", "share_treated")


def auc_mann_whitney(score: np.ndarray, label: np.ndarray) -> float:
    """ROC-AUC of ``score`` for the binary ``label`` via average ranks (ties count ½)."""
    label = np.asarray(label).astype(bool)
    n1 = label.sum()
    n0 = label.size - n1
    if n1 == 0 or n0 == 0:
        return np.nan
    r = stats.rankdata(score)
    return float((r[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def replicate_metrics(score: np.ndarray, delta: np.ndarray, rank: str = "spearman") -> dict[str, float]:
    """All per-replicate metrics of one method from its scores and the true benefit Δ."""
    score = np.asarray(score, float)
    delta = np.asarray(delta, float)
    d_true = delta > 0
    d_hat = score > 0
    tp = np.sum(d_hat & d_true)
    fp = np.sum(d_hat & ~d_true)
    fn = np.sum(~d_hat & d_true)
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else np.nan
    if np.ptp(score) == 0:
        rc = np.nan
    elif rank == "spearman":
        rc = stats.spearmanr(score, delta).statistic
    elif rank == "kendall":
        rc = stats.kendalltau(score, delta).statistic
    else:
        raise ValueError(f"rank correlation must be 'spearman' or 'kendall', got {rank!r}")
    return {"accuracy": float(np.mean(d_hat == d_true)), "f1": float(f1), "rank_corr": float(rc),
            "auc": auc_mann_whitney(score, d_true), "share_treated": float(np.mean(d_hat))}


def congruence_matrix(decisions: np.ndarray) -> np.ndarray:
    """(m, m) share of rows on which each pair of methods makes the same decision.

    ``decisions``: (n_rows, m) 0/1 matrix, one column per method.
    """
    d = np.asarray(decisions, float)
    agree1 = d.T @ d
    agree0 = (1 - d).T @ (1 - d)
    return (agree1 + agree0) / d.shape[0]


def evaluate_chunk(fits: pd.DataFrame, sim: pd.DataFrame, rank: str = "spearman") -> pd.DataFrame:
    """Long metrics table ``rep, method, metric, other, value`` for one cell's chunk.

    ``fits``: rows ``rep, method, row, cate, decision, failed`` on the test split; ``sim``: the
    simulated chunk (``rep, split, row, delta``). A failed method-replicate records
    ``failed = 1`` and no other metric.
    """
    truth = sim.loc[sim["split"] == "test", ["rep", "row", "delta"]]
    f = fits.merge(truth, on=["rep", "row"], how="left", validate="many_to_one")
    if f["delta"].isna().any():
        bad = f.loc[f["delta"].isna(), ["rep", "row"]].head(5).to_dict("records")
        raise ValueError(f"fits rows without simulation truth, e.g. {bad}: the fit and simulation "
                         "chunks do not match")
    out = []
    for (rep, method), g in f.groupby(["rep", "method"], sort=True):
        failed = bool(g["failed"].any()) if "failed" in g else False
        out.append({"rep": rep, "method": method, "metric": "failed", "other": None, "value": float(failed)})
        if "seconds" in g:
            out.append({"rep": rep, "method": method, "metric": "seconds", "other": None,
                        "value": float(g["seconds"].iloc[0])})
        if failed:
            continue
        g = g.sort_values("row")
        for k, v in replicate_metrics(g["cate"].to_numpy(), g["delta"].to_numpy(), rank).items():
            out.append({"rep": rep, "method": method, "metric": k, "other": None, "value": v})
    ok = f[~f.get("failed", pd.Series(False, index=f.index)).astype(bool)]
    for rep, g in ok.groupby("rep", sort=True):
        wide = g.pivot(index="row", columns="method", values="decision")
        wide = wide.dropna(axis=1)
        cm = congruence_matrix(wide.to_numpy())
        ms = list(wide.columns)
        a, b = np.meshgrid(np.arange(len(ms)), np.arange(len(ms)), indexing="ij")
        out.extend({"rep": rep, "method": ms[i], "metric": "congruence", "other": ms[j], "value": float(cm[i, j])}
                   for i, j in zip(a.ravel(), b.ravel()))
    res = pd.DataFrame(out, columns=["rep", "method", "metric", "other", "value"])
    res["rep"] = res["rep"].astype("int64")
    return res


def aggregate(metrics: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, SD and Monte-Carlo SE (SD/√R) of each metric over replicates, per ``by`` groups."""
    keys = by + ["method", "metric", "other"]
    m = metrics.copy()
    m["other"] = m["other"].fillna("")
    g = m.groupby(keys, sort=False)["value"]
    out = g.agg(mean="mean", sd="std", n_reps="count").reset_index()
    out["mcse"] = out["sd"] / np.sqrt(out["n_reps"].clip(lower=1))
    return out
