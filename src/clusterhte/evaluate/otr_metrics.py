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

# scipy.stats is imported inside the functions that use it (the loop reference and Kendall's tau):
# the vectorised Spearman path needs none of it, and the import costs ~0.6 s per workflow job.

METRICS = ("accuracy", "f1", "rank_corr", "auc", "share_treated")


def auc_mann_whitney(score: np.ndarray, label: np.ndarray) -> float:
    """ROC-AUC of ``score`` for the binary ``label`` via average ranks (ties count ½)."""
    from scipy import stats

    label = np.asarray(label).astype(bool)
    n1 = label.sum()
    n0 = label.size - n1
    if n1 == 0 or n0 == 0:
        return np.nan
    r = stats.rankdata(score)
    return float((r[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def replicate_metrics(score: np.ndarray, delta: np.ndarray, rank: str = "spearman") -> dict[str, float]:
    """All per-replicate metrics of one method from its scores and the true benefit Δ."""
    from scipy import stats

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


def congruence_counts(D: np.ndarray) -> np.ndarray:
    """(R, m, m) number of rows on which methods i and j make the same decision, per replicate:
    ``sum_n d_i d_j + (1 - d_i)(1 - d_j)`` for ``D`` (R, m, n) of small integers (0/1, -1 for a
    failed method).

    One matrix product per replicate: ``n - s_i - s_j + 2 (D D')_ij`` with ``s`` the row sums,
    the product in float32, which holds every partial sum exactly (integers below 2**24), so the
    counts are the exact integers of the direct float64 sums (and ``counts / n`` the same
    float64 values). Other inputs go through the direct sums.
    """
    D = np.asarray(D)
    R, m, n = D.shape
    if D.dtype.kind == "b":
        D = D.view(np.uint8)
    if n >= 1 << 24 or (D.size and (D.max() > 1 or D.min() < -1)):
        Df = D.astype(float)
        return np.einsum("rin,rjn->rij", Df, Df) + np.einsum("rin,rjn->rij", 1 - Df, 1 - Df)
    D32 = np.ascontiguousarray(D, dtype=np.float32)
    both = np.matmul(D32, D32.transpose(0, 2, 1)).astype(np.float64)   # sum d_i d_j
    s = D32.sum(axis=2, dtype=np.float64)                               # sum d_i (exact)
    return n - s[:, :, None] - s[:, None, :] + 2.0 * both


def _grid(rep: np.ndarray, row: np.ndarray):
    """(reps, n) when (rep, row) is the full grid reps x 0..n-1 in lexicographic order, else None."""
    if rep.size == 0:
        return None
    reps, counts = np.unique(rep, return_counts=True)
    n = int(counts[0])
    if not np.all(counts == n) or reps.size * n != rep.size:
        return None
    if not (np.array_equal(rep, np.repeat(reps, n)) and np.array_equal(row, np.tile(np.arange(n), reps.size))):
        return None
    return reps, n


def _lex_order(rep: np.ndarray, row: np.ndarray):
    """Index ordering rows by (rep, row); a slice when they already are (the written layout)."""
    if rep.size < 2:
        return slice(None)
    dr = np.diff(rep)
    if np.all((dr > 0) | ((dr == 0) & (np.diff(row) > 0))):
        return slice(None)
    return np.lexsort((row, rep))


def _ranks_kernel():
    """The compiled tie-group pass of :func:`_rowwise_rank` (built on first use)."""
    global _RANKS_KERNEL
    if _RANKS_KERNEL is None:
        import numba

        @numba.njit(cache=True)
        def ranks(A, o):  # pragma: no cover - numba
            R, n = A.shape
            out = np.empty((R, n))
            for r in range(R):
                start = 0
                while start < n:
                    v = A[r, o[r, start]]
                    end = start + 1
                    while end < n and A[r, o[r, end]] == v:
                        end += 1
                    avg = float(start) + (end - start - 1) / 2.0 + 1.0
                    for i in range(start, end):
                        out[r, o[r, i]] = avg
                    start = end
            return out

        _RANKS_KERNEL = ranks
    return _RANKS_KERNEL


_RANKS_KERNEL = None


def _rowwise_rank(A: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) along the last axis of a 2-d array
    (``scipy.stats.rankdata(A, axis=-1)``): one unstable sort per row, then one compiled pass
    over each row's sorted order that gives every tie group its average position (the same
    float64 values as :func:`_rowwise_rank_numpy`, the vectorised numpy form)."""
    A = np.ascontiguousarray(A, dtype=float)
    if A.size == 0:
        return np.empty(A.shape)
    o = np.argsort(A, axis=1)
    return _ranks_kernel()(A, o)


def _rowwise_rank_numpy(A: np.ndarray) -> np.ndarray:
    """:func:`_rowwise_rank` with vectorised numpy tie groups (the reference of its test)."""
    A = np.asarray(A, dtype=float)
    R, n = A.shape
    o = np.argsort(A, axis=1)
    s = np.take_along_axis(A, o, axis=1).ravel()
    new = np.ones(R * n, dtype=bool)
    new[1:] = s[1:] != s[:-1]
    new[::n] = True                                   # every row starts a group
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], R * n]
    pos0 = starts - (starts // n) * n                 # position within the row
    avg = pos0 + (ends - starts - 1) / 2.0 + 1.0
    ranks_sorted = np.repeat(avg, ends - starts)
    out = np.empty((R, n))
    np.put_along_axis(out, o, ranks_sorted.reshape(R, n), axis=1)
    return out


def metrics_arrays(score: np.ndarray, delta: np.ndarray, rank: str = "spearman",
                   delta_ranks: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`replicate_metrics` for many replicates at once: ``score``, ``delta`` (R, n)
    (``delta_ranks``: the row-wise ranks of ``delta``, when already computed)."""
    score = np.asarray(score, float)
    delta = np.asarray(delta, float)
    d_true = delta > 0
    d_hat = score > 0
    tp = np.sum(d_hat & d_true, axis=1)
    fp = np.sum(d_hat & ~d_true, axis=1)
    fn = np.sum(~d_hat & d_true, axis=1)
    den = 2 * tp + fp + fn
    f1 = np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)
    const = np.ptp(score, axis=1) == 0
    rs = _rowwise_rank(score)
    if rank == "spearman":
        rd = _rowwise_rank(delta) if delta_ranks is None else delta_ranks
        a = rs - rs.mean(axis=1, keepdims=True)
        b = rd - rd.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rc = np.sum(a * b, axis=1) / np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    elif rank == "kendall":
        from scipy import stats

        rc = np.array([stats.kendalltau(s, d).statistic if not c else np.nan
                       for s, d, c in zip(score, delta, const)])
    else:
        raise ValueError(f"rank correlation must be 'spearman' or 'kendall', got {rank!r}")
    rc = np.where(const, np.nan, rc)
    n1 = d_true.sum(axis=1)
    n0 = d_true.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (np.sum(np.where(d_true, rs, 0.0), axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    auc = np.where((n1 == 0) | (n0 == 0), np.nan, auc)
    return {"accuracy": np.mean(d_hat == d_true, axis=1), "f1": f1, "rank_corr": rc, "auc": auc,
            "share_treated": np.mean(d_hat, axis=1)}


def evaluate_chunk(fits: pd.DataFrame, sim: pd.DataFrame, rank: str = "spearman") -> pd.DataFrame:
    """Long metrics table ``rep, method, metric, other, value`` for one cell's chunk.

    ``fits``: rows ``rep, method, row, cate, decision, failed`` on the test split; ``sim``: the
    simulated chunk (``rep, split, row, delta``). A failed method-replicate records
    ``failed = 1`` and no other metric; congruence is taken among the methods that did not fail.

    Vectorised over replicates when the test rows of every method form the grid reps x rows (the
    layout the fit stage writes); any other layout goes through :func:`evaluate_chunk_loop`, which
    gives the same values.
    """
    by_method = {m: g for m, g in fits.groupby("method", sort=True)}
    out = evaluate_methods(by_method, sim, rank)
    return evaluate_chunk_loop(fits, sim, rank) if out is None else out


def evaluate_methods(fits: dict[str, pd.DataFrame], sim: pd.DataFrame, rank: str = "spearman",
                     fallback: bool = True) -> pd.DataFrame | None:
    """:func:`evaluate_chunk` with the fits given per method (name -> fit table, no ``method``
    column needed). Returns None when a layout is not the grid and ``fallback`` is False."""
    test = (sim["split"] == "test").to_numpy()
    t_rep = sim["rep"].to_numpy()[test]
    t_row = sim["row"].to_numpy()[test]
    order = _lex_order(t_rep, t_row)
    t_rep, t_row = t_rep[order], t_row[order]
    grid = _grid(t_rep, t_row)

    def slow():
        if not fallback:
            return None
        allf = pd.concat([f.assign(method=m) for m, f in fits.items()], ignore_index=True)
        return evaluate_chunk_loop(allf, sim, rank)

    if grid is None:
        return slow()
    reps, n = grid
    R = reps.size
    delta = sim["delta"].to_numpy(dtype=float)[test][order].reshape(R, n)
    methods = sorted(fits)
    arr = {}
    for m in methods:
        g = fits[m]
        rep = g["rep"].to_numpy()
        row = g["row"].to_numpy()
        o = _lex_order(rep, row)
        if not (np.array_equal(rep[o], t_rep) and np.array_equal(row[o], t_row)):
            return slow()
        failed = (g["failed"].to_numpy()[o].reshape(R, n) != 0).any(axis=1) if "failed" in g \
            else np.zeros(R, dtype=bool)
        secs = g["seconds"].to_numpy(dtype=float)[o].reshape(R, n)[:, 0] if "seconds" in g else None
        # decisions keep their stored type (int8 in the fit tables): the congruence counts take
        # them as float32 either way, and stacking 14 methods' int8 costs an eighth of float64
        dec = g["decision"].to_numpy()
        if dec.dtype.kind not in "iub":
            dec = dec.astype(float, copy=False)
        arr[m] = (g["cate"].to_numpy(dtype=float)[o].reshape(R, n), dec[o].reshape(R, n), failed, secs)
    cols = {"rep": [], "method": [], "metric": [], "other": [], "value": []}

    def add(method, metric, values, keep, other=None):
        k = int(np.count_nonzero(keep))
        cols["rep"].append(reps[keep])
        cols["value"].append(np.asarray(values, float)[keep])
        cols["method"].append(np.full(k, method, dtype=object))
        cols["metric"].append(np.full(k, metric, dtype=object))
        cols["other"].append(np.full(k, other, dtype=object))

    everyone = np.ones(R, dtype=bool)
    rd = _rowwise_rank(delta) if rank == "spearman" else None
    for m in methods:
        score, _, failed, secs = arr[m]
        add(m, "failed", failed.astype(float), everyone)
        if secs is not None:
            add(m, "seconds", secs, everyone)
        ok = ~failed
        if ok.any():
            for k, v in metrics_arrays(np.where(ok[:, None], score, 0.0), delta, rank, rd).items():
                add(m, k, v, ok)
    OK = np.stack([~arr[m][2] for m in methods], axis=1)        # (R, m)
    agree = congruence_counts(np.stack([arr[m][1] for m in methods], axis=1)) / n
    for i, a in enumerate(methods):
        for j, b in enumerate(methods):
            keep = OK[:, i] & OK[:, j]
            if keep.any():
                add(a, "congruence", agree[:, i, j], keep, other=b)
    res = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
    res["rep"] = res["rep"].astype("int64")
    res["other"] = res["other"].astype(object).where(res["other"].notna(), None)
    return res


def evaluate_chunk_loop(fits: pd.DataFrame, sim: pd.DataFrame, rank: str = "spearman") -> pd.DataFrame:
    """Per-replicate loop form of :func:`evaluate_chunk` (any row layout; the reference the
    vectorised form is tested against).

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
