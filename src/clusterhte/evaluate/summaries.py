"""Summaries of estimated CATEs on one trial, for any method and any clustered trial.

Every function takes the tidy *fits* table of the apply stage (one row per method x patient:
``method``, ``row``, ``cate`` and, when present, ``cluster``, ``lower``, ``upper``, ``ate``,
``ate_lower``, ``ate_upper``) and, where covariates are needed, the trial's frame (rows in the
order of ``row``). Outputs are tidy DataFrames with a ``method`` column, ready for the figure
functions of :mod:`clusterhte.plots.cate` and for the report (spec ``crt_cate.md`` §5.3).

Summaries
    :func:`ate_table` (ATE and its 95% interval), :func:`cate_quantiles` (the CATE distribution),
    :func:`cluster_average` (cluster-average CATEs), :func:`subgroup_table` (subgroup-average
    CATEs), :func:`subgroup_difference_in_means` (a model-free reference for the subgroups),
    :func:`best_linear_projection` (OLS of doubly robust scores on standardised covariates, CR2),
    :func:`share_benefit`, :func:`agreement_matrix` (Spearman correlation and decision agreement).
Diagnostics
    :func:`marginal_vs_conditional` (predictions without vs with the cluster random effect),
    :func:`posterior_predictive_check` (Bayesian methods' replicated outcomes against the data),
    :func:`compare_to_reference` (each method's CATEs against a reference method, e.g. the LMM).

Decisions use the rule of :class:`~clusterhte.methods.base.CateResult`: benefit is
``cate > cutoff`` when larger outcomes are better, ``cate < cutoff`` otherwise (TASSH: the change in
systolic blood pressure, so benefit is ``cate < 0``).

Intervals: a row-level CATE interval cannot be averaged into a subgroup or cluster interval. Those
functions therefore give intervals only from posterior or bootstrap *draws* (``draws`` argument,
``{method: (n_rows, n_draws) array}``): the equal-tailed quantiles of the per-draw average. Without
draws the interval columns are NaN; :func:`subgroup_difference_in_means` gives a design-based
interval for every subgroup from the data alone.

The best linear projection regresses cluster-cross-fitted doubly robust scores (as grf's
``best_linear_projection`` does), not the estimated CATEs, with CR2 cluster-robust SEs
(:mod:`clusterhte.evaluate.validation`); it is one table for the trial, not one per method.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from clusterhte.data.trial import TrialDataError
from clusterhte.evaluate.validation import ROUNDING_TOL

__all__ = ["ate_table", "cate_quantiles", "cluster_average", "subgroup_table",
           "subgroup_difference_in_means", "best_linear_projection", "share_benefit",
           "agreement_matrix", "marginal_vs_conditional", "posterior_predictive_check",
           "compare_to_reference", "benefit"]


# --------------------------------------------------------------------------------- helpers
def _varies(x) -> bool:
    """True when ``x`` varies by more than rounding (the validation's ``ROUNDING_TOL`` of its
    scale): a correlation with a constant is undefined."""
    x = np.asarray(x, dtype=float)
    return bool(x.size) and float(np.ptp(x)) > ROUNDING_TOL * max(float(np.abs(x).max()), 1e-300)


def _check(df: pd.DataFrame, need: Iterable[str], what: str = "fits") -> None:
    if not isinstance(df, pd.DataFrame):
        raise TrialDataError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise TrialDataError(f"{what}: missing column(s) {missing}; present: {list(df.columns)}")
    if len(df) == 0:
        raise TrialDataError(f"{what}: the table is empty")


def _methods(fits: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(fits["method"].astype(str)))


def _by_method(fits: pd.DataFrame):
    """Yield (method, rows of that method sorted by ``row``); duplicate rows raise."""
    for m in _methods(fits):
        f = fits.loc[fits["method"].astype(str) == m].sort_values("row", kind="stable")
        dup = f["row"].duplicated()
        if dup.any():
            raise TrialDataError(f"fits: method '{m}' has duplicate row(s) {f.loc[dup, 'row'].head(5).tolist()}")
        yield m, f


def benefit(cate, cutoff: float = 0.0, larger_is_better: bool = True) -> np.ndarray:
    """1 where the CATE is beyond ``cutoff`` on the benefit side, else 0 (the CateResult rule)."""
    c = np.asarray(cate, dtype=float)
    return (c > cutoff if larger_is_better else c < cutoff).astype(np.int8)


def _draws_for(draws: Mapping[str, np.ndarray] | None, method: str, n: int) -> np.ndarray | None:
    if not draws or method not in draws or draws[method] is None:
        return None
    d = np.asarray(draws[method], dtype=float)
    if d.ndim != 2 or d.shape[0] != n:
        raise TrialDataError(f"draws['{method}']: expected shape (n_rows={n}, n_draws), got {d.shape}")
    return d


def _group_means(values: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Means of ``values`` (n,) or (n, d) by integer group codes 0..k-1 (vectorised)."""
    cnt = np.bincount(codes, minlength=k).astype(float)
    if values.ndim == 1:
        return np.bincount(codes, weights=values, minlength=k) / cnt
    from scipy import sparse

    onehot = sparse.csr_matrix((np.ones(codes.size), (codes, np.arange(codes.size))), shape=(k, codes.size))
    return np.asarray(onehot @ values) / cnt[:, None]


def _quantile_interval(d: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    a = (1 - level) / 2
    lo, hi = np.quantile(d, [a, 1 - a], axis=-1)
    return lo, hi


# --------------------------------------------------------------------------------- summaries
def ate_table(fits: pd.DataFrame, level: float = 0.95,
              draws: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """ATE (mean CATE over the rows) per method with its ``level`` interval.

    The interval comes from ``draws`` when given for the method (quantiles of the per-draw mean),
    else from the method's own ``ate_lower``/``ate_upper`` columns (posterior, bootstrap or Wald,
    computed by the fit stage), else NaN. ``interval`` names the source.
    """
    _check(fits, ["method", "row", "cate"])
    out = []
    for m, f in _by_method(fits):
        cate = f["cate"].to_numpy(dtype=float)
        d = _draws_for(draws, m, len(f))
        if d is not None:
            lo, hi = _quantile_interval(d.mean(axis=0), level)
            src = "draws"
        elif {"ate_lower", "ate_upper"} <= set(f.columns) and np.isfinite(f["ate_lower"].iloc[0]):
            lo, hi = float(f["ate_lower"].iloc[0]), float(f["ate_upper"].iloc[0])
            src = "method"
        else:
            lo = hi = np.nan
            src = "none"
        out.append({"method": m, "n": len(f), "ate": float(cate.mean()), "lower": float(lo),
                    "upper": float(hi), "interval": src, "cate_sd": float(cate.std(ddof=1)) if len(f) > 1 else np.nan})
    return pd.DataFrame(out)


def cate_quantiles(fits: pd.DataFrame, probs: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95)) -> pd.DataFrame:
    """The distribution of the CATEs per method: mean, SD, min, max and the ``probs`` quantiles."""
    _check(fits, ["method", "row", "cate"])
    out = []
    for m, f in _by_method(fits):
        c = f["cate"].to_numpy(dtype=float)
        row = {"method": m, "n": c.size, "mean": c.mean(), "sd": c.std(ddof=1) if c.size > 1 else np.nan,
               "min": c.min(), "max": c.max()}
        row.update({f"q{round(100 * p):02d}": q for p, q in zip(probs, np.quantile(c, probs))})
        out.append(row)
    return pd.DataFrame(out)


def cluster_average(fits: pd.DataFrame, cluster=None, level: float = 0.95,
                    draws: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Cluster-average CATE per method and cluster, ranked within method (1 = largest).

    ``cluster`` (array aligned with ``row``) is used when the fits have no ``cluster`` column.
    ``lower``/``upper`` come from ``draws`` (quantiles of the per-draw cluster mean), else NaN.
    """
    _check(fits, ["method", "row", "cate"])
    out = []
    for m, f in _by_method(fits):
        if "cluster" in f.columns:
            cl = f["cluster"].to_numpy()
        elif cluster is not None:
            cl = np.asarray(cluster)[f["row"].to_numpy(dtype=int)]
        else:
            raise TrialDataError("fits: no 'cluster' column; pass cluster= (one label per row)")
        codes, labels = pd.factorize(cl, sort=True)
        k = len(labels)
        cate = f["cate"].to_numpy(dtype=float)
        mean = _group_means(cate, codes, k)
        d = _draws_for(draws, m, len(f))
        if d is not None:
            lo, hi = _quantile_interval(_group_means(d, codes, k), level)
        else:
            lo = hi = np.full(k, np.nan)
        out.append(pd.DataFrame({"method": m, "cluster": labels, "n": np.bincount(codes, minlength=k),
                                 "cate": mean, "lower": lo, "upper": hi,
                                 "rank": pd.Series(mean).rank(ascending=False, method="min").to_numpy(int)}))
    return pd.concat(out, ignore_index=True)


def _masks(frame: pd.DataFrame, groups) -> dict[tuple[str, str], np.ndarray]:
    if callable(groups):
        return groups(frame)
    out = {}
    for key, mask in dict(groups).items():
        key = key if isinstance(key, tuple) else (str(key), str(key))
        m = np.asarray(mask(frame) if callable(mask) else mask)
        if m.dtype != bool or m.shape != (len(frame),):
            raise TrialDataError(f"subgroup {key}: mask must be boolean of length {len(frame)}, "
                                 f"got dtype {m.dtype} shape {m.shape}")
        out[key] = m
    return out


def subgroup_table(fits: pd.DataFrame, frame: pd.DataFrame, groups, level: float = 0.95,
                   cutoff: float = 0.0, larger_is_better: bool = True,
                   draws: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Subgroup-average CATEs per method.

    Parameters
    ----------
    frame : the trial's frame; ``row`` of the fits indexes its rows (0-based positions).
    groups : ``{(variable, group label): boolean mask over frame rows}`` (a mask may be a callable
        of ``frame``), or a callable ``frame -> that dict`` (e.g. ``tassh.subgroup_masks``).
    Returns ``method, variable, group, n, n_clusters, cate, sd, share_benefit, lower, upper``;
    the interval comes from ``draws`` (quantiles of the per-draw subgroup mean), else NaN.
    """
    _check(fits, ["method", "row", "cate"])
    masks = _masks(frame, groups)
    out = []
    for m, f in _by_method(fits):
        rows = f["row"].to_numpy(dtype=int)
        cate = f["cate"].to_numpy(dtype=float)
        d = _draws_for(draws, m, len(f))
        for (var, grp), mask in masks.items():
            sel = mask[rows]
            n = int(sel.sum())
            c = cate[sel]
            lo = hi = np.nan
            if d is not None and n:
                lo, hi = _quantile_interval(d[sel].mean(axis=0), level)
            ncl = int(frame["cluster"].iloc[rows[sel]].nunique()) if "cluster" in frame.columns else np.nan
            out.append({"method": m, "variable": var, "group": grp, "n": n, "n_clusters": ncl,
                        "cate": float(c.mean()) if n else np.nan,
                        "sd": float(c.std(ddof=1)) if n > 1 else np.nan,
                        "share_benefit": float(benefit(c, cutoff, larger_is_better).mean()) if n else np.nan,
                        "lower": float(lo), "upper": float(hi)})
    return pd.DataFrame(out)


def _cluster_robust_ols(y: np.ndarray, X: np.ndarray, cluster: np.ndarray):
    """OLS with the CR1 cluster-robust covariance (statsmodels' small-sample correction)."""
    import statsmodels.api as sm

    codes = pd.factorize(cluster, sort=True)[0]
    return sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": codes, "use_correction": True,
                                                            "df_correction": True})


def subgroup_difference_in_means(frame: pd.DataFrame, groups, level: float = 0.95) -> pd.DataFrame:
    """Model-free subgroup effects: treated minus control mean outcome within each subgroup.

    OLS of ``outcome`` on an intercept and ``treatment`` in the subgroup, CR1 cluster-robust SE,
    t interval on (number of clusters in the subgroup - 1) degrees of freedom. Returned with
    ``method = "difference in means"`` in the layout of :func:`subgroup_table`.
    """
    _check(frame, ["cluster", "treatment", "outcome"], "trial frame")
    masks = _masks(frame, groups)
    out = []
    for (var, grp), mask in masks.items():
        f = frame.loc[mask]
        y = f["outcome"].to_numpy(dtype=float)
        a = f["treatment"].to_numpy(dtype=float)
        G = f["cluster"].nunique()
        est = se = lo = hi = np.nan
        if len(f) > 2 and 0 < a.sum() < len(a) and G > 2:
            r = _cluster_robust_ols(y, np.column_stack([np.ones_like(a), a]), f["cluster"].to_numpy())
            est, se = float(r.params[1]), float(r.bse[1])
            q = stats.t.ppf(0.5 + level / 2, G - 1)
            lo, hi = est - q * se, est + q * se
        out.append({"method": "difference in means", "variable": var, "group": grp, "n": len(f),
                    "n_clusters": int(G), "cate": est, "se": se, "lower": lo, "upper": hi})
    return pd.DataFrame(out)


def best_linear_projection(fits: pd.DataFrame | None, frame: pd.DataFrame, columns: Sequence[str],
                           level: float = 0.95, standardize: bool = True, seed: int = 20231,
                           k: int = 5) -> pd.DataFrame:
    """Best linear projection of the treatment effect on ``columns`` (grf's
    ``best_linear_projection``), from the trial alone: OLS of doubly robust scores on (1,
    covariates) with CR2 cluster-robust SEs and Satterthwaite df.

    The scores use the known propensity (share of treated clusters when every cluster has one arm,
    else each site's treated share) and outcome models cross-fitted over whole clusters
    (:func:`clusterhte.evaluate.validation.dr_scores`, folds from ``seed``). They do not depend on
    any method, so ``fits`` is not used (kept for the call signature of the summaries). With
    ``standardize`` the intercept is the doubly robust ATE and each slope the change in the effect
    per SD of the covariate, holding the others fixed. Returns ``term, estimate, se, df, lower,
    upper, p_value``. A constant column raises, naming it.

    This replaces the regression of the *estimated* CATEs on the covariates, whose intervals
    described the fitted surface, not the data (its intercept interval had zero width).
    """
    from clusterhte.data.trial import TrialData
    from clusterhte.evaluate import validation as V
    from clusterhte.folds import cluster_strata

    columns = list(columns)
    _check(frame, ["cluster", "treatment", "outcome"] + columns, "trial frame")
    codes = pd.factorize(frame["cluster"], sort=True)[0]
    single_arm = (cluster_strata(codes, frame["treatment"].to_numpy(dtype=float)) < 2).all()
    td = TrialData(frame[["cluster", "treatment", "outcome"] + columns].reset_index(drop=True),
                   "crt" if single_arm else "multisite", tuple(columns), name="trial")
    fold = V.validation_folds(td, seed, k)
    sc = V.dr_scores(td, fold)
    return V.best_linear_projection(sc["gamma"].to_numpy(), td.frame, columns, td.cluster, level,
                                    standardize)


def share_benefit(fits: pd.DataFrame, cutoff: float = 0.0, larger_is_better: bool = True) -> pd.DataFrame:
    """Share of rows whose CATE is on the benefit side of ``cutoff``, per method.

    ``share_sure`` is the share whose whole interval (``lower``/``upper``) is on the benefit side
    (NaN when the method has no intervals).
    """
    _check(fits, ["method", "row", "cate"])
    out = []
    for m, f in _by_method(fits):
        c = f["cate"].to_numpy(dtype=float)
        sure = np.nan
        if {"lower", "upper"} <= set(f.columns):
            lo, hi = f["lower"].to_numpy(dtype=float), f["upper"].to_numpy(dtype=float)
            if np.isfinite(lo).all() and np.isfinite(hi).all():
                sure = float(np.mean(lo > cutoff if larger_is_better else hi < cutoff))
        out.append({"method": m, "n": c.size, "share_benefit": float(benefit(c, cutoff, larger_is_better).mean()),
                    "share_sure": sure})
    return pd.DataFrame(out)


def _wide(fits: pd.DataFrame, value: str = "cate") -> pd.DataFrame:
    """rows x methods; every method must have predicted the same rows."""
    w = fits.pivot(index="row", columns="method", values=value)
    w = w[_methods(fits)]
    holes = w.columns[w.isna().any()].tolist()
    if holes:
        raise TrialDataError(f"fits: method(s) {holes} lack a CATE for some rows the others predicted")
    return w


def agreement_matrix(fits: pd.DataFrame, cutoff: float = 0.0, larger_is_better: bool = True) -> pd.DataFrame:
    """Agreement between every pair of methods (including each with itself).

    ``spearman``: Spearman rank correlation of the CATEs (NaN when one method's CATE is constant);
    ``decision_agreement``: share of rows with the same treatment decision;
    ``kappa``: Cohen's kappa of the decisions (NaN when both decide the same for everyone).
    Long format: ``method_a, method_b, spearman, decision_agreement, kappa``.
    """
    _check(fits, ["method", "row", "cate"])
    for _m, _f in _by_method(fits):  # duplicate rows raise, naming the method
        pass
    w = _wide(fits)
    C = w.to_numpy(dtype=float)
    R = np.apply_along_axis(stats.rankdata, 0, C)
    Rc = R - R.mean(axis=0)
    norm = np.sqrt((Rc ** 2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (Rc.T @ Rc) / np.outer(norm, norm)
    D = benefit(C, cutoff, larger_is_better).astype(float)
    n = D.shape[0]
    agree = (D.T @ D + (1 - D).T @ (1 - D)) / n
    p = D.mean(axis=0)
    pe = np.outer(p, p) + np.outer(1 - p, 1 - p)
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(pe < 1, (agree - pe) / (1 - pe), np.nan)
    ms = list(w.columns)
    ia, ib = np.meshgrid(np.arange(len(ms)), np.arange(len(ms)), indexing="ij")
    return pd.DataFrame({"method_a": np.asarray(ms)[ia.ravel()], "method_b": np.asarray(ms)[ib.ravel()],
                         "spearman": rho.ravel(), "decision_agreement": agree.ravel(), "kappa": kappa.ravel()})


# --------------------------------------------------------------------------------- diagnostics
def marginal_vs_conditional(marginal, conditional, cluster) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions with the random effect set to zero (``marginal``) against with it (``conditional``).

    Returns (overall, per_cluster). ``overall``: n, correlation, RMS and mean of the difference
    ``conditional - marginal``, and the share of the conditional prediction variance explained by
    the cluster (between-cluster variance of the difference over the conditional variance).
    ``per_cluster``: cluster, n, mean marginal, mean conditional, mean and SD of the difference
    (for a random intercept the SD is 0 and the mean is the predicted intercept).
    """
    mg = np.asarray(marginal, dtype=float).ravel()
    cd = np.asarray(conditional, dtype=float).ravel()
    cl = np.asarray(cluster).ravel()
    if not (mg.size == cd.size == cl.size):
        raise TrialDataError(f"marginal_vs_conditional: lengths differ (marginal {mg.size}, "
                             f"conditional {cd.size}, cluster {cl.size})")
    diff = cd - mg
    codes, labels = pd.factorize(cl, sort=True)
    k = len(labels)
    nj = np.bincount(codes, minlength=k)
    md = _group_means(diff, codes, k)
    sd = np.sqrt(np.maximum(_group_means(diff ** 2, codes, k) - md ** 2, 0.0))
    per = pd.DataFrame({"cluster": labels, "n": nj, "marginal": _group_means(mg, codes, k),
                        "conditional": _group_means(cd, codes, k), "difference": md, "difference_sd": sd})
    var_c = cd.var()
    overall = pd.DataFrame([{"n": mg.size,
                             "correlation": float(np.corrcoef(mg, cd)[0, 1]) if _varies(mg) and _varies(cd) else np.nan,
                             "rms_difference": float(np.sqrt(np.mean(diff ** 2))),
                             "mean_difference": float(diff.mean()),
                             "cluster_share": float(np.var(md[codes]) / var_c) if var_c > 0 else np.nan}])
    return overall, per


def _stat_funcs(cluster: np.ndarray | None):
    funcs = {"mean": lambda Y: Y.mean(axis=-1), "sd": lambda Y: Y.std(axis=-1, ddof=1),
             "min": lambda Y: Y.min(axis=-1), "max": lambda Y: Y.max(axis=-1),
             "q10": lambda Y: np.quantile(Y, 0.1, axis=-1), "median": lambda Y: np.median(Y, axis=-1),
             "q90": lambda Y: np.quantile(Y, 0.9, axis=-1)}
    if cluster is not None:
        codes, labels = pd.factorize(np.asarray(cluster), sort=True)
        k = len(labels)

        def between_sd(Y):
            Y2 = np.atleast_2d(Y)
            m = _group_means(Y2.T, codes, k)  # (k, draws)
            return np.squeeze(m.std(axis=0, ddof=1))
        funcs["cluster_mean_sd"] = between_sd
    return funcs


def posterior_predictive_check(y, y_rep, cluster=None, level: float = 0.95) -> pd.DataFrame:
    """Posterior predictive check of the outcome for a Bayesian method.

    ``y_rep`` is (n_draws, n): outcomes replicated from the posterior (including the random effect
    and the residual noise). For each statistic T (mean, SD, min, max, 10/50/90% quantiles and,
    with ``cluster``, the SD of the cluster means) returns the observed T(y), the mean and
    ``level`` interval of T(y_rep), and the posterior predictive p-value P(T(y_rep) >= T(y)).
    p-values near 0 or 1 flag a feature of the data the model does not reproduce.
    """
    y = np.asarray(y, dtype=float).ravel()
    Y = np.asarray(y_rep, dtype=float)
    if Y.ndim != 2 or Y.shape[1] != y.size:
        raise TrialDataError(f"posterior_predictive_check: y_rep must be (n_draws, n={y.size}), got {Y.shape}")
    if cluster is not None and np.asarray(cluster).size != y.size:
        raise TrialDataError("posterior_predictive_check: cluster must have one label per outcome")
    out = []
    for name, T in _stat_funcs(cluster).items():
        t_obs = float(T(y[None, :]).ravel()[0])
        t_rep = np.asarray(T(Y), dtype=float).ravel()
        lo, hi = _quantile_interval(t_rep, level)
        out.append({"statistic": name, "observed": t_obs, "replicated_mean": float(t_rep.mean()),
                    "lower": float(lo), "upper": float(hi), "p_value": float(np.mean(t_rep >= t_obs))})
    return pd.DataFrame(out)


def compare_to_reference(fits: pd.DataFrame, reference: str = "lmm", cutoff: float = 0.0,
                         larger_is_better: bool = True) -> pd.DataFrame:
    """Each method's CATEs against those of ``reference`` (e.g. the linear mixed model).

    Returns ``method, reference, pearson, spearman, mean_difference, rmsd, decision_agreement``
    (difference = method - reference, over the rows both predicted).
    """
    _check(fits, ["method", "row", "cate"])
    if reference not in set(fits["method"].astype(str)):
        raise TrialDataError(f"compare_to_reference: reference method '{reference}' is not in the fits "
                             f"(methods: {_methods(fits)})")
    w = _wide(fits)
    ref = w[reference].to_numpy(dtype=float)
    out = []
    for m in w.columns:
        c = w[m].to_numpy(dtype=float)
        d = c - ref
        ok = _varies(c) and _varies(ref)
        out.append({"method": m, "reference": reference,
                    "pearson": float(np.corrcoef(c, ref)[0, 1]) if ok else np.nan,
                    "spearman": float(stats.spearmanr(c, ref).statistic) if ok else np.nan,
                    "mean_difference": float(d.mean()), "rmsd": float(np.sqrt(np.mean(d ** 2))),
                    "decision_agreement": float(np.mean(benefit(c, cutoff, larger_is_better)
                                                        == benefit(ref, cutoff, larger_is_better)))})
    return pd.DataFrame(out)
