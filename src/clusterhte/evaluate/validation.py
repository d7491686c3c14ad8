"""Is the heterogeneity real? Cluster-aware validation of any method's CATEs or benefit scores.

Every step splits by whole clusters (:mod:`clusterhte.folds`) and every interval is cluster-robust,
because in a clustered trial the cluster, not the row, is the independent unit.

Steps (one function each; :func:`cross_fit` is the only expensive one, :func:`assess` combines):

1. **Out-of-fold CATEs** (:func:`cross_fit`): K-fold cross-fitting over whole clusters, stratified
   by arm in a CRT (K = 5, fewer when an arm has fewer clusters, :func:`clusterhte.folds.n_folds`);
   each fold's rows are predicted by the method fitted on the other folds. OTR weighting scores
   (``info["scale"] == "delta/2"``) are doubled onto the Δ = E[Y(1) - Y(0) | x] scale; decisions
   are the method's own (unchanged by the scale).
2. **Doubly robust scores** (:func:`dr_scores`): Γ_i = m1 - m0 + A (Y - m1) / e - (1 - A)(Y - m0) /
   (1 - e), with the *known* propensity e (CRT: the share of treated clusters; multisite: the
   site's treated share, :func:`propensity`) and outcome models m_a(x) fitted per arm by least
   squares on the covariates on the other folds (same cluster folds). With e known the scores are
   unbiased for the CATE whatever the outcome model; the model only reduces variance.
3. **Calibration** (:func:`calibration`; Chernozhukov, Demirer, Duflo & Fernandez-Val's BLP test as
   in grf's ``test_calibration``): OLS of Γ on (τ̄, τ̂ - τ̄_fold), τ̄ the mean out-of-fold CATE
   and τ̄_fold its mean in the row's fold (removes the cross-fitting offset, see the function).
   ``mean_prediction`` (1 = the average is right) and ``differential`` (1 = well calibrated
   heterogeneity; > 0 = heterogeneity exists) with CR2 SEs and Satterthwaite df
   (:mod:`clusterhte.evaluate.cr2`), one-sided p-values for H1: coefficient > 0 as in grf.
   grf regresses Y - m(X) on (W - e) τ̄ and (W - e)(τ̂ - τ̄) (R-learner form) with HC3/cluster SEs;
   we regress the DR scores (the form of the issue and of Chernozhukov et al.'s BLP) with CR2.
4. **Best linear projection** (:func:`best_linear_projection`; grf's ``best_linear_projection``):
   OLS of Γ on (1, standardised covariates), CR2. The intercept is the doubly robust ATE.
5. **GATES** (:func:`gates`; Chernozhukov et al., DoubleML ``gate``): the ATE within quantile groups
   of the out-of-fold τ̂ (OLS of Γ on group dummies, CR2) and the difference top - bottom. The
   groups are quantile groups *within each fold* (:func:`within_fold_rank`), and every contrast's
   variance adds the cross-fitting term (:func:`crossfit_covariance`, from the same regression
   fold by fold), with :func:`combined_df`.
6. **RATE** (:func:`rate`; grf's ``rank_average_treatment_effect``): TOC(q) = mean Γ among the q
   share with the highest priority minus the ATE; AUTOC = ∫ TOC, Qini = ∫ q TOC, on the *benefit*
   scale (Γ and τ̂ sign-flipped when smaller outcomes are better). Ties are averaged as in grf.
   Rows are ranked within their fold. Intervals: estimate ± t SE, the SE from a cluster bootstrap
   stratified by arm (grf: half-sampling with clusters) plus the cross-fitting term (the same
   statistics fold by fold under the same bootstrap weights), t on :func:`combined_df`.
   Why within folds, with the extra term: no heterogeneity, LMM, 200 simulated CRTs of 30
   clusters: ranked across folds, GATES top - bottom had mean -0.454 and covered 0 in 72.5% of
   trials, the AUTOC mean -0.136 and 70.5% (GPBoost, 100 trials: AUTOC 56%, Qini 48%); now
   -0.005 / 92.5% and 0.014 / 93.0% (GPBoost: AUTOC 88%, Qini 93%, GATES 96% of the 70 trials
   where its CATEs vary); see
   ``tests/test_validation.py::test_validation_intervals_cover_under_no_heterogeneity``.
7. **Model selection** (:func:`model_selection`): per-row DR-loss (Γ - τ̂)^2 and R-loss
   ((Y - m) - (A - e) τ̂)^2 of every method and of the constant (cross-fitted ATE) predictor, each
   method's mean-loss difference from the best with cluster-bootstrap percentile intervals (paired:
   the same resampled clusters for every method).
8. **Policy value** (:func:`policy_value`): the AIPW value mean(d Γ1 + (1 - d) Γ0) of each
   method's out-of-fold regime d (treat where the method recommends), of treat-all and of
   treat-none, with CR2 intervals; the gain over treat-all and treat-none on the benefit scale
   (positive = better; TASSH: lower blood pressure is better). Every cluster is held out when its
   regime is learned, so in a multisite trial this *is* the value on new sites (leave-sites-out).
   The variance of a learned regime's value and gains adds Imai & Li's cross-fitting term
   (:func:`crossfit_mean`): the regimes of different folds are learned from each other's data, so
   their fold estimates are correlated, and a CR2 interval that treats each fold's regime as fixed
   under-covers (no heterogeneity, LMM, 200 simulated CRTs: the gain over treat-all covered 0 in
   92.0% of trials, SE 0.111 against an SD of 0.144; with the term 96.0%, SE 0.156; GPBoost, 100
   trials, ``pytest -m slow -k null_and_strong``: 91% -> 94%). Treat-all and
   treat-none are not learned and keep the plain CR2 interval.

Tables (the workflow's ``results/tables/{dataset}/`` and ``clusterhte validate --out DIR``) are
listed in :data:`VALIDATION_TABLES`.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from scipy import stats

from clusterhte import folds as F
from clusterhte import seeds
from clusterhte.data.trial import TrialData, propensity  # noqa: F401 - part of this module's API
from clusterhte.evaluate.cr2 import cr2_ols

__all__ = ["propensity", "validation_folds", "cross_fit", "dr_scores", "calibration",
           "best_linear_projection", "within_fold_rank", "gates", "rate", "model_selection", "crossfit_covariance",
           "combined_df", "crossfit_mean", "policy_value", "assess",
           "verdict", "VALIDATION_TABLES", "CONSTANT"]

VALIDATION_TABLES = ["oof_cates", "calibration", "blp", "gates", "rate", "toc", "model_selection",
                     "policy_value", "verdict"]
CONSTANT = "constant (ATE)"
DEFAULT_FOLDS = 5
# Predicted effects that differ by less than this share of their scale differ by rounding only: a
# method that predicts one effect (up to rounding) has no ranking and no differential term.
ROUNDING_TOL = 1e-10


# ----------------------------------------------------------------------------- design pieces
def validation_folds(trial: TrialData, seed: int, k: int = DEFAULT_FOLDS) -> np.ndarray:
    """Fold label per row: whole clusters, stratified by arm, K adapted to the cluster counts.

    Depends on the root ``seed`` only (not on the method), so every method is cross-fitted on the
    same folds and the DR scores are shared.
    """
    codes = trial.cluster_codes
    strata = F.cluster_strata(codes, trial.treatment)
    kk = F.n_folds(int(codes.max()) + 1, k, strata)
    return F.cluster_folds(codes, kk, seeds.rng(seed, "validation", "folds"), strata)


def _bootstrap_weights(codes: np.ndarray, treatment: np.ndarray, n_boot: int,
                       rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) row weights of a cluster bootstrap, clusters resampled within arm strata."""
    strata = F.cluster_strata(codes, treatment)
    J = strata.shape[0]
    counts = np.zeros((n_boot, J))
    for s in np.unique(strata):  # at most 3 strata
        idx = np.flatnonzero(strata == s)
        counts[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n_boot)
    return counts[:, codes]


# ----------------------------------------------------------------------------- 1. cross-fitting
# hyperparameters that only make intervals (refits); validation uses point predictions only
INTERVAL_ONLY = {"n_bootstrap": 0, "n_half_samples": 0}


def point_params(method: str, params: dict | None) -> dict:
    """``params`` with the interval-only refits switched off (:data:`INTERVAL_ONLY`): the point
    predictions are unchanged, the K cross-fits cost one fit each instead of one per refit."""
    from clusterhte import methods

    out = dict(params or {})
    names = methods.get(method).param_names()
    out.update({k: v for k, v in INTERVAL_ONLY.items() if k in names})
    return out


def cross_fit(trial: TrialData, method: str, params: dict | None, seed: int, *,
              k: int = DEFAULT_FOLDS, larger_is_better: bool = True, threads: int = 1,
              log=sys.stderr, intervals: bool = False) -> pd.DataFrame:
    """Out-of-fold CATEs of ``method``: ``row, cluster, fold, cate, decision, seconds``.

    ``cate`` is on the Δ scale (weighting scores doubled); ``decision`` is the method's own
    recommendation (1 = treat) with the trial's outcome direction. A failing fold raises.
    Unless ``intervals``, the interval-only refits are switched off (:func:`point_params`).
    """
    from clusterhte import methods
    from clusterhte.stages.fitting import with_threads

    params = dict(params or {}) if intervals else point_params(method, params)
    params = with_threads(method, params, threads)
    fold = validation_folds(trial, seed, k)
    K = int(fold.max()) + 1
    cate = np.full(trial.n, np.nan)
    dec = np.zeros(trial.n, dtype=np.int8)
    t0 = time.perf_counter()
    for f in range(K):  # K model fits: the loop is over folds, not rows
        test = fold == f
        est = methods.make(method, params, random_state=seeds.int_seed(seed, "validation", f, method))
        est.fit(trial.subset(~test))
        r = est.predict(trial.subset(test))
        r.larger_is_better = larger_is_better
        factor = 2.0 if r.info.get("scale") == "delta/2" else 1.0
        cate[test] = factor * r.point
        dec[test] = r.decision
        print(f"[validate {method}] fold {f + 1}/{K}: fitted on {int((~test).sum())} rows, "
              f"predicted {int(test.sum())}", file=log, flush=True)
    if not np.isfinite(cate).all():
        raise RuntimeError(f"method '{method}' gave non-finite out-of-fold CATEs")
    return pd.DataFrame({"row": np.arange(trial.n), "cluster": trial.cluster, "fold": fold,
                         "cate": cate, "decision": dec, "seconds": time.perf_counter() - t0})


# ----------------------------------------------------------------------------- 2. DR scores
def _ls_fit_predict(X_tr, y_tr, X_te, ridge: float = 1e-8):
    """Least squares with intercept (tiny ridge on the slopes for collinear covariates)."""
    mu, sd = X_tr.mean(axis=0), X_tr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Z_tr = np.column_stack([np.ones(len(X_tr)), (X_tr - mu) / sd])
    Z_te = np.column_stack([np.ones(len(X_te)), (X_te - mu) / sd])
    P = np.eye(Z_tr.shape[1]) * ridge * len(X_tr)
    P[0, 0] = 0.0
    b = np.linalg.solve(Z_tr.T @ Z_tr + P, Z_tr.T @ y_tr)
    return Z_te @ b


def dr_scores(trial: TrialData, fold: np.ndarray, e: np.ndarray | None = None) -> pd.DataFrame:
    """Doubly robust scores with cross-fitted linear outcome models per arm.

    Returns ``row, cluster, fold, e, m0, m1, gamma0, gamma1, gamma`` where ``gamma1``/``gamma0``
    are the AIPW scores of the potential outcomes and ``gamma = gamma1 - gamma0`` the CATE score.
    """
    e = propensity(trial) if e is None else np.asarray(e, dtype=float)
    X = trial.X()
    y, a = trial.outcome, trial.treatment
    m0 = np.full(trial.n, np.nan)
    m1 = np.full(trial.n, np.nan)
    for f in np.unique(fold):  # K fits
        te = fold == f
        for arm, m in ((0, m0), (1, m1)):
            tr = (~te) & (a == arm)
            m[te] = _ls_fit_predict(X[tr], y[tr], X[te])
    g1 = m1 + a * (y - m1) / e
    g0 = m0 + (1 - a) * (y - m0) / (1 - e)
    return pd.DataFrame({"row": np.arange(trial.n), "cluster": trial.cluster, "fold": fold, "e": e,
                         "m0": m0, "m1": m1, "gamma0": g0, "gamma1": g1, "gamma": g1 - g0})


def _row(fit, c, term, alternative="two-sided", level=0.95, null=0.0, extra: float = 0.0,
         n_folds: int = 0) -> dict:
    """t test and interval of ``c'b`` (CR2, Satterthwaite df); ``extra`` is added to its variance
    (the cross-fitting term of ``n_folds`` folds, with :func:`combined_df`)."""
    r = fit.test(c, null=null, alternative=alternative)
    se, df = r["se"], r["df"]
    p = r["p_value"]
    if extra > 0:
        df = float(combined_df(se ** 2, df, extra, n_folds))
        se = float(np.sqrt(se ** 2 + extra))
        t = (r["estimate"] - null) / se
        p = float({"two-sided": 2 * stats.t.sf(abs(t), df), "greater": stats.t.sf(t, df),
                   "less": stats.t.cdf(t, df)}[alternative])
    q = stats.t.ppf(0.5 + level / 2, df) if np.isfinite(df) else np.nan
    return {"term": term, "estimate": r["estimate"], "se": se, "df": df,
            "p_value": p, "lower": r["estimate"] - q * se, "upper": r["estimate"] + q * se}


# ----------------------------------------------------------------------------- cross-fitting variance
def crossfit_covariance(estimates, variances, weights) -> np.ndarray:
    """Imai & Li's between-fold covariance term of a cross-fitted estimate.

    ``estimates``, ``variances``: (K, ...) per-fold estimates and their variances given the fold's
    fitted model; ``weights`` (K,): the folds' shares of the pooled estimate. With exchangeable
    folds, ``Var(pooled) = sum_k w_k^2 V_k + (1 - sum_k w_k^2) C`` and ``E[S_F^2] = V - C`` for the
    between-fold sample variance ``S_F^2``; returns ``(1 - sum_k w_k^2) max(0, mean_k V_k - S_F^2)``,
    to be added to the pooled variance (``S_F^2`` capped at the within-fold variance, as evalITR
    does). Folds whose estimate or variance is not finite, or whose variance is 0, are left out: a
    fold where the method predicts one CATE (a regime that treats the whole fold, a ranking with
    every row tied) has a fixed estimate that neither varies nor covaries.
    """
    est = np.asarray(estimates, float)
    var = np.asarray(variances, float)
    w = np.asarray(weights, float).reshape((-1,) + (1,) * (est.ndim - 1))
    ok = np.isfinite(est) & np.isfinite(var) & (var > 0)
    n_ok = ok.sum(axis=0)
    e0, v0 = np.where(ok, est, 0.0), np.where(ok, var, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_e = e0.sum(axis=0) / n_ok
        sf2 = (np.where(ok, (est - mean_e) ** 2, 0.0)).sum(axis=0) / (n_ok - 1)
        vbar = v0.sum(axis=0) / n_ok
        factor = 1.0 - (np.where(ok, w, 0.0) ** 2).sum(axis=0) / np.where(ok, w, 0.0).sum(axis=0) ** 2
    out = factor * np.maximum(0.0, vbar - sf2)
    return np.where(n_ok >= 2, out, 0.0)


def combined_df(var, df, extra, n_folds: int):
    """Satterthwaite df of ``var + extra`` when ``var`` has ``df`` degrees of freedom and the
    cross-fitting term ``extra`` those of a between-fold variance of ``n_folds`` estimates
    (``n_folds - 1``): ``(var + extra)^2 / (var^2 / df + extra^2 / (n_folds - 1))``. ``df`` when
    ``extra`` is 0."""
    var, df, extra = np.asarray(var, float), np.asarray(df, float), np.asarray(extra, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (var + extra) ** 2 / (var ** 2 / df + extra ** 2 / max(n_folds - 1, 1))
    return np.where(extra > 0, out, df)



# ----------------------------------------------------------------------------- 3. calibration
def calibration(gamma, tau, cluster, level: float = 0.95, fold=None) -> pd.DataFrame:
    """BLP calibration test: OLS of Γ on (τ̄, τ̂ - τ̄), CR2 with Satterthwaite df.

    Terms ``mean_prediction`` and ``differential``; ``p_value`` one-sided (H1: coefficient > 0,
    grf's convention); ``lower``/``upper`` two-sided ``level`` intervals. A constant τ̂ (no
    heterogeneity predicted) gives NaN for ``differential``; τ̄ = 0 gives NaN for
    ``mean_prediction``.

    ``fold`` (the cross-fitting folds): the differential regressor is centred within each fold,
    τ̂ - mean_fold(τ̂). With cross-fitting each fold's predictions carry the average effect of
    *other* folds' data, an offset anti-correlated with the fold's own scores; left in, it pulls
    the slope towards 0 (a conservative test). Chernozhukov et al. use one split, grf one forest's
    out-of-bag predictions, so neither has fold offsets.
    """
    gamma, tau = np.asarray(gamma, float), np.asarray(tau, float)
    tbar = float(tau.mean())
    if fold is None:
        dev = tau - tbar
    else:
        fc = pd.factorize(np.asarray(fold))[0]
        K = int(fc.max()) + 1
        dev = tau - (np.bincount(fc, weights=tau, minlength=K) / np.bincount(fc, minlength=K))[fc]
    nan = {"estimate": np.nan, "se": np.nan, "df": np.nan, "p_value": np.nan, "lower": np.nan,
           "upper": np.nan}
    scale = max(np.abs(tau).max(), 1e-300)
    has_dev = dev.std() > ROUNDING_TOL * scale
    has_mean = abs(tbar) > 1e-12 * scale
    cols = ([np.full_like(tau, tbar)] if has_mean else []) + ([dev] if has_dev else [])
    rows = []
    if cols:
        fit = cr2_ols(gamma, np.column_stack(cols), cluster)
        i = 0
        for term, present in (("mean_prediction", has_mean), ("differential", has_dev)):
            if present:
                c = np.zeros(len(cols))
                c[i] = 1.0
                rows.append(_row(fit, c, term, "greater", level))
                i += 1
            else:
                rows.append({"term": term, **nan})
    else:
        rows = [{"term": t, **nan} for t in ("mean_prediction", "differential")]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- 4. BLP
def best_linear_projection(gamma, frame: pd.DataFrame, columns, cluster, level: float = 0.95,
                           standardize: bool = True) -> pd.DataFrame:
    """OLS of the DR scores Γ on (1, covariates), CR2 SEs, Satterthwaite df, two-sided p-values.

    With ``standardize`` each covariate is centred and scaled to SD 1, so the intercept is the
    doubly robust ATE and each slope the change in the CATE per SD, holding the others fixed.
    Returns ``term, estimate, se, df, lower, upper, p_value``. A constant column raises, naming it;
    a column that is a linear combination of earlier ones gets NaN (aliased, as in R's ``lm``).
    """
    from clusterhte.data.trial import TrialDataError

    columns = list(columns)
    X = frame[columns].to_numpy(dtype=float) if columns else np.empty((len(frame), 0))
    sd = X.std(axis=0, ddof=1) if len(X) > 1 else np.zeros(X.shape[1])
    const = [c for c, s in zip(columns, sd) if not s > 0]
    if const:
        raise TrialDataError(f"best_linear_projection: covariate(s) {const} are constant; drop them")
    if standardize and columns:
        X = (X - X.mean(axis=0)) / sd
    D = np.column_stack([np.ones(len(X)), X])
    keep = _independent_columns(D)
    fit = cr2_ols(np.asarray(gamma, float), D[:, keep], cluster)
    terms = ["intercept"] + columns
    rows, j = [], 0
    for i, t in enumerate(terms):
        if i in keep:
            c = np.zeros(len(keep))
            c[j] = 1.0
            rows.append(_row(fit, c, t, "two-sided", level))
            j += 1
        else:  # a linear combination of earlier columns (e.g. a full set of dummies)
            rows.append({"term": t, "estimate": np.nan, "se": np.nan, "df": np.nan, "lower": np.nan,
                         "upper": np.nan, "p_value": np.nan})
    return pd.DataFrame(rows)[["term", "estimate", "se", "df", "lower", "upper", "p_value"]]


def _independent_columns(D: np.ndarray, tol: float = 1e-9) -> list[int]:
    """Indices of a maximal set of linearly independent columns, earlier columns first (columns
    that are combinations of earlier ones are dropped, as R's ``lm`` aliases them)."""
    keep: list[int] = []
    for i in range(D.shape[1]):
        cand = keep + [i]
        sv = np.linalg.svd(D[:, cand], compute_uv=False)
        if sv[-1] > tol * max(sv[0], 1.0) * np.sqrt(D.shape[0]):
            keep = cand
    return keep


# ----------------------------------------------------------------------------- 5. GATES
def quantile_groups(tau, n_groups: int) -> np.ndarray:
    """Group 0..G-1 by quantiles of ``tau`` (tied values in one group; empty groups dropped)."""
    tau = np.asarray(tau, float)
    r = stats.rankdata(tau, method="min") - 1
    g = np.floor(r * n_groups / tau.size).astype(int)
    return np.unique(g, return_inverse=True)[1]


def within_fold_rank(tau, fold) -> np.ndarray:
    """Each row's τ̂ as its mid-rank share within its fold, in (0, 1): the ranking of out-of-fold
    predictions that does not compare folds.

    Why: fold k's predictions come from a model fitted on the other folds, so their level moves
    with the other folds' estimate of the ATE, which is high when the other folds' outcomes are
    high, that is when fold k's are low relative to the rest of the trial. Ranked across folds,
    the folds whose outcomes happened to be worst relative to the rest land at the top, and
    GATES/RATE are biased downwards, against finding heterogeneity (under no effect their
    intervals exclude 0 on the negative side): with no effect (LMM, 200 simulated CRTs of 30
    clusters) the top-minus-bottom GATES interval covered 0 in 72.5% of trials and the AUTOC
    interval in 70.5%. Chernozhukov et al.'s GATES form groups within each split for the same
    reason.
    """
    tau, fold = np.asarray(tau, float), np.asarray(fold)
    # differences below 1e-10 of the CATEs' scale are rounding, not a ranking (the calibration's
    # tolerance): a fold predicted one effect for everyone is all ties
    scale = max(float(np.abs(tau).max()) if tau.size else 0.0, 1e-300)
    t = np.round(tau / (ROUNDING_TOL * scale))
    out = np.empty(tau.size)
    for k in np.unique(fold):  # K folds
        m = fold == k
        out[m] = (stats.rankdata(t[m]) - 0.5) / m.sum()
    return out


def gates(gamma, tau, cluster, n_groups: int = 5, level: float = 0.95, fold=None) -> pd.DataFrame:
    """Group ATEs by quantile group of τ̂ (group 1 = lowest τ̂) and ``top_minus_bottom``.

    OLS of Γ on group dummies (no intercept), CR2/Satterthwaite. Returns ``group, n, tau_mean,
    estimate, se, df, lower, upper, p_value`` (``tau_mean`` the mean predicted CATE of the group).
    ``fold``: the cross-fitting folds of τ̂; when given, the groups are quantile groups within
    each fold (:func:`within_fold_rank`; a fold that predicts one effect for everyone is in the
    middle group).
    """
    gamma, tau = np.asarray(gamma, float), np.asarray(tau, float)
    if fold is None:
        g = quantile_groups(tau, n_groups)
    else:  # the fold's own quantile groups: within-fold shares cut at 1/G, 2/G, ...
        share = within_fold_rank(tau, fold)
        g = np.unique(np.minimum(np.floor(share * n_groups), n_groups - 1).astype(int), return_inverse=True)[1]
    G = int(g.max()) + 1
    if G < 2:
        return pd.DataFrame({"group": ["1"], "n": [tau.size], "tau_mean": [tau.mean()],
                             **{c: [np.nan] for c in ("estimate", "se", "df", "lower", "upper", "p_value")}})
    D = (g[:, None] == np.arange(G)[None, :]).astype(float)
    fit = cr2_ols(gamma, D, cluster)
    c = np.zeros(G)
    c[-1], c[0] = 1.0, -1.0
    C = np.vstack([np.eye(G), c])
    extra, K = np.zeros(len(C)), 0
    if fold is not None:
        extra = _gates_crossfit(gamma, D, np.asarray(cluster), np.asarray(fold), C)
        K = np.unique(fold).size
    rows = [_row(fit, ci, str(i + 1), "two-sided", level, extra=ex, n_folds=K)
            for i, (ci, ex) in enumerate(zip(C[:G], extra))]
    rows.append(_row(fit, c, "top_minus_bottom", "two-sided", level, extra=extra[-1], n_folds=K))
    out = pd.DataFrame(rows).rename(columns={"term": "group"})
    n = np.bincount(g, minlength=G)
    tm = np.bincount(g, weights=tau, minlength=G) / n
    out.insert(1, "n", list(n) + [tau.size])
    out.insert(2, "tau_mean", list(tm) + [tm[-1] - tm[0]])
    return out[["group", "n", "tau_mean", "estimate", "se", "df", "lower", "upper", "p_value"]]


def _gates_crossfit(gamma, D, cluster, fold, C) -> np.ndarray:
    """Cross-fitting covariance term (:func:`crossfit_covariance`) of each GATES contrast (rows
    of ``C``) from the same regression fitted fold by fold. A fold that lacks a group (a fold
    where the method predicts one effect for everyone sits in the middle group) or has fewer than
    2 clusters has no per-fold fit and is left out of the term."""
    est, var, w = [], [], []
    for k in np.unique(fold):  # K fits
        m = fold == k
        w.append(m.mean())
        if D[m].sum(axis=0).min() == 0 or np.unique(cluster[m]).size < 2:
            est.append(np.full(len(C), np.nan))
            var.append(np.full(len(C), np.nan))
            continue
        fk = cr2_ols(gamma[m], D[m], cluster[m])
        est.append(C @ fk.coef)
        var.append(np.einsum("ij,jk,ik->i", C, fk.vcov, C))
    return crossfit_covariance(np.array(est), np.array(var), np.array(w))


# ----------------------------------------------------------------------------- 6. RATE / TOC
def _toc_weighted(gamma_s, starts, W, grid):
    """AUTOC, Qini and TOC(grid) for rows sorted by decreasing priority under row weights W (R x n).

    Ties (contiguous blocks starting at ``starts``) get their weighted block mean, which is the
    expectation over random tie-breaking.
    """
    block = np.zeros(gamma_s.size, dtype=int)
    block[starts[1:]] = 1
    block = np.cumsum(block)
    Sw = np.add.reduceat(W, starts, axis=1)
    Sg = np.add.reduceat(W * gamma_s[None, :], starts, axis=1)
    gbar = np.divide(Sg, Sw, out=np.zeros_like(Sg), where=Sw > 0)[:, block]
    tot = W.sum(axis=1, keepdims=True)
    ate = (W * gamma_s[None, :]).sum(axis=1, keepdims=True) / tot
    cw = np.cumsum(W, axis=1)
    cg = np.cumsum(W * gbar, axis=1)
    toc = np.divide(cg, cw, out=np.zeros_like(cg), where=cw > 0) - ate
    q = cw / tot
    wr = W / tot
    autoc = (wr * toc).sum(axis=1)
    qini = (wr * q * toc).sum(axis=1)
    # TOC at each grid q: the first sorted row whose cumulative share reaches q
    idx = np.argmax(q[:, None, :] >= grid[None, :, None] - 1e-12, axis=2)
    curve = np.take_along_axis(toc, idx, axis=1)
    return autoc, qini, curve


def _rate_crossfit(gs, ps, W, grid, fold_s) -> np.ndarray:
    """Cross-fitting covariance term (:func:`crossfit_covariance`) of AUTOC, Qini and each TOC(q):
    the same statistics computed fold by fold (rows in the pooled order, ``fold_s`` their folds),
    their variances from the same bootstrap weights ``W`` (row 0 = the estimate)."""
    ks = np.unique(fold_s)
    est, var, w = [], [], []
    for k in ks:  # K folds
        m = fold_s == k
        st = np.flatnonzero(np.r_[True, np.diff(ps[m]) != 0])
        Wk = W[:, m]
        keep = Wk.sum(axis=1) > 0
        a, q, c = _toc_weighted(gs[m], st, Wk[keep], grid)
        stat = np.column_stack([a, q, c])           # (replicates, 2 + grid)
        est.append(stat[0])
        var.append(stat[1:].var(axis=0, ddof=1))
        w.append(m.mean())
    return crossfit_covariance(np.array(est), np.array(var), np.array(w))


def rate(gamma, tau, cluster, treatment, rng: np.random.Generator, *, larger_is_better: bool = True,
         n_boot: int = 200, level: float = 0.95, grid=None, fold=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RATE of the ranking by τ̂ (benefit scale): (``target, estimate, se, lower, upper, p_value``,
    TOC curve ``q, estimate, lower, upper``). Intervals from a stratified cluster bootstrap: normal
    ones, or with ``fold`` t intervals whose variance adds the cross-fitting term.
    ``fold``: the cross-fitting folds of τ̂; when given, rows are ranked within their fold
    (:func:`within_fold_rank`).
    """
    s = 1.0 if larger_is_better else -1.0
    g, pr = s * np.asarray(gamma, float), s * np.asarray(tau, float)
    if fold is not None:
        pr = within_fold_rank(pr, fold)
    order = np.argsort(-pr, kind="stable")
    gs, ps = g[order], pr[order]
    starts = np.flatnonzero(np.r_[True, np.diff(ps) != 0])
    grid = np.round(np.arange(0.05, 1.0001, 0.05), 4) if grid is None else np.asarray(grid, float)
    codes = pd.factorize(np.asarray(cluster), sort=True)[0]
    Wb = _bootstrap_weights(codes, np.asarray(treatment, float), n_boot, rng)[:, order]
    W = np.vstack([np.ones((1, g.size)), Wb])
    autoc, qini, curve = _toc_weighted(gs, starts, W, grid)
    boot_var = np.column_stack([autoc, qini, curve])[1:].var(axis=0, ddof=1)
    extra, df = np.zeros(boot_var.size), np.full(boot_var.size, np.inf)   # df = inf: normal
    if fold is not None:
        extra = _rate_crossfit(gs, ps, W, grid, np.asarray(fold)[order])
        # a stratified cluster bootstrap's variance: about J - 2 df (clusters minus arms)
        df = combined_df(boot_var, max(int(codes.max()) + 1 - 2, 1), extra, np.unique(fold).size)
    z = stats.t.ppf(0.5 + level / 2, df)
    se_all = np.sqrt(boot_var + extra)
    rows = []
    for j, (name, v) in enumerate((("AUTOC", autoc), ("QINI", qini))):
        se = float(se_all[j])
        p = float(2 * stats.t.sf(abs(v[0] / se), df[j])) if se > 0 else np.nan
        rows.append({"target": name, "estimate": float(v[0]), "se": se, "lower": v[0] - z[j] * se,
                     "upper": v[0] + z[j] * se, "p_value": p})
    se_c = se_all[2:]
    toc = pd.DataFrame({"q": grid, "estimate": curve[0], "se": se_c, "lower": curve[0] - z[2:] * se_c,
                        "upper": curve[0] + z[2:] * se_c})
    return pd.DataFrame(rows), toc


# ----------------------------------------------------------------------------- 7. model selection
def constant_predictor(gamma, fold) -> np.ndarray:
    """The no-heterogeneity benchmark: each fold gets the mean DR score of the other folds."""
    gamma, fold = np.asarray(gamma, float), np.asarray(fold)
    K = int(fold.max()) + 1
    s = np.bincount(fold, weights=gamma, minlength=K)
    n = np.bincount(fold, minlength=K)
    return ((s.sum() - s) / (n.sum() - n))[fold]


def model_selection(scores: pd.DataFrame, y, treatment, taus: dict, cluster,
                    rng: np.random.Generator, n_boot: int = 200, level: float = 0.95) -> pd.DataFrame:
    """Grouped DR- and R-loss of every method (and the constant predictor) and each one's loss
    difference from the best, with paired stratified cluster-bootstrap percentile intervals.

    ``scores``: :func:`dr_scores`; ``taus``: {method: out-of-fold CATE on the Δ scale}.
    Returns ``method, loss, value, difference, lower, upper, rank``.
    """
    y, a = np.asarray(y, float), np.asarray(treatment, float)
    e, m0, m1, gam = (scores[c].to_numpy() for c in ("e", "m0", "m1", "gamma"))
    taus = dict(taus)
    taus.setdefault(CONSTANT, constant_predictor(gam, scores["fold"].to_numpy()))
    names = list(taus)
    T = np.column_stack([np.asarray(taus[m], float) for m in names])
    m = e * m1 + (1 - e) * m0
    losses = {"dr": (gam[:, None] - T) ** 2,
              "r": ((y - m)[:, None] - (a - e)[:, None] * T) ** 2}
    codes = pd.factorize(np.asarray(cluster), sort=True)[0]
    Wb = _bootstrap_weights(codes, a, n_boot, rng)
    al = (1 - level) / 2
    out = []
    for loss, L in losses.items():
        v = L.mean(axis=0)
        vb = (Wb @ L) / Wb.sum(axis=1, keepdims=True)
        best = int(np.argmin(v))
        d = v - v[best]
        db = vb - vb[:, [best]]
        lo, hi = np.quantile(db, [al, 1 - al], axis=0)
        rank = stats.rankdata(v, method="min").astype(int)
        out.append(pd.DataFrame({"method": names, "loss": loss, "value": v, "difference": d,
                                 "lower": lo, "upper": hi, "rank": rank}))
    return pd.concat(out, ignore_index=True).sort_values(["loss", "rank"], ignore_index=True)


# ----------------------------------------------------------------------------- 8. policy value
def _fold_mean_variances(x, cluster, fold, ks) -> np.ndarray:
    """Variance of each fold's mean of ``x`` given its regime: CR2 over the fold's clusters.

    A fold of one cluster (a multisite trial of fewer than 10 sites has some) has no within-fold
    estimate; then every fold's variance comes from one working model, cluster means of a common
    variance phi: ``V_k = phi sum_{c in k} n_c^2 / n_k^2``, phi pooled over the folds with at least
    2 clusters (cluster totals centred at their fold's mean, CR1 factor ``J_k / (J_k - 1)``), or,
    when every fold has one cluster, over all clusters around the overall mean.
    """
    codes = pd.factorize(np.asarray(cluster))[0]
    J = int(codes.max()) + 1
    fold_of = np.zeros(J, dtype=np.asarray(fold).dtype)
    fold_of[codes] = fold
    n_c = np.bincount(codes, minlength=J).astype(float)
    J_k = np.array([np.sum(fold_of == k) for k in ks])
    if J_k.min() >= 2:
        one = np.ones((x.size, 1))
        return np.array([cr2_ols(x[fold == k], one[fold == k], codes[fold == k]).vcov[0, 0] for k in ks])
    S_c = np.bincount(codes, weights=x, minlength=J)
    if J_k.max() >= 2:
        mean_k = {k: x[fold == k].mean() for k in ks}
        u = S_c - n_c * np.array([mean_k[k] for k in fold_of])
        factor = {k: jk / (jk - 1.0) for k, jk in zip(ks, J_k) if jk >= 2}
        use = np.array([k in factor for k in fold_of])
        phi = float(np.sum(u[use] ** 2 * np.array([factor[k] for k in fold_of[use]])) / np.sum(n_c[use] ** 2))
    else:
        u = S_c - n_c * x.mean()
        phi = float(np.sum(u ** 2) / np.sum(n_c ** 2) * J / (J - 1.0))
    return np.array([phi * np.sum(n_c[fold_of == k] ** 2) / np.sum(n_c[fold_of == k]) ** 2 for k in ks])


def crossfit_mean(x, cluster, fold, level: float = 0.95) -> dict:
    """Mean of ``x`` over all rows when ``x`` depends on a regime cross-fitted over ``fold``.

    Estimand: the mean of ``x`` (a policy value or gain score), with the variance of Imai & Li's
    cross-fitted evaluation ("Experimental evaluation of individualized treatment rules", JASA
    2023, the cross-validation estimators; R package evalITR, ``PAVcv``): the pooled CR2 variance
    plus the between-fold covariance term of :func:`crossfit_covariance`, from the fold means and
    their CR2 variances (:func:`_fold_mean_variances` for folds of one cluster).

    Differences from evalITR: fold weights by size (folds of whole clusters differ in size), CR2
    within-fold variances instead of Neyman's, and a t quantile on the Satterthwaite df of the sum
    (:func:`combined_df`: the pooled CR2 df and K - 1 for the term) where evalITR uses the normal.
    With a zero term it is the pooled CR2 interval. Conservative when the regimes barely depend on
    the training folds (``S_F^2`` from K = 5 estimates is noisy and the cap keeps only its low
    draws): with a strong linear modifier the SE was 1.4 times the estimate's SD (200 trials,
    coverage 0.97-0.98).

    Returns estimate, se, df, p_value (two-sided, H0: mean 0), lower, upper, crossfit_var (C term).
    """
    x = np.asarray(x, dtype=float)
    fold = np.asarray(fold)
    extra = 0.0
    ks = np.unique(fold)
    if ks.size > 1:
        means = np.array([x[fold == k].mean() for k in ks])
        w = np.array([np.mean(fold == k) for k in ks])
        extra = float(crossfit_covariance(means, _fold_mean_variances(x, np.asarray(cluster), fold, ks), w))
    r = _row(cr2_ols(x, np.ones((x.size, 1)), cluster), [1.0], "", level=level, extra=extra, n_folds=ks.size)
    return {k: r[k] for k in ("estimate", "se", "df", "p_value", "lower", "upper")} | {"crossfit_var": extra}


def policy_value(scores: pd.DataFrame, decisions: dict, cluster, *, larger_is_better: bool = True,
                 level: float = 0.95, fold=None) -> pd.DataFrame:
    """AIPW value of each regime (``decisions``: {method: 0/1 per row}) and of treat-all/none.

    ``value``: mean outcome under the regime with CR2 interval (``se, df, lower, upper``);
    ``gain_vs_all``/``gain_vs_none``: value difference from treat-all/treat-none on the benefit
    scale (sign-flipped when smaller outcomes are better), with CR2 intervals. ``fold``: the
    cross-fitting folds of the learned regimes (``decisions``); when given, their value and gains
    get Imai & Li's cross-fitting variance (:func:`crossfit_mean`), otherwise the regimes are
    treated as fixed (right for a regime learned on other data).
    """
    g1, g0 = scores["gamma1"].to_numpy(), scores["gamma0"].to_numpy()
    s = 1.0 if larger_is_better else -1.0
    regimes = {"treat all": np.ones_like(g1), "treat none": np.zeros_like(g1)}
    learned = {k: np.asarray(v, float) for k, v in decisions.items()}
    regimes.update(learned)
    folds = np.zeros(g1.size, dtype=int) if fold is None else np.asarray(fold)
    rows = []
    for name, d in regimes.items():
        f = folds if name in learned else np.zeros(g1.size, dtype=int)
        v = d * g1 + (1 - d) * g0
        r = crossfit_mean(v, cluster, f, level)
        ga = crossfit_mean(s * (v - g1), cluster, f, level) if name != "treat all" else None
        gn = crossfit_mean(s * (v - g0), cluster, f, level) if name != "treat none" else None
        row = {"method": name, "value": r["estimate"], "se": r["se"], "df": r["df"], "lower": r["lower"],
               "upper": r["upper"], "share_treated": float(d.mean())}
        for key, x in (("gain_vs_all", ga), ("gain_vs_none", gn)):
            row[key] = 0.0 if x is None else x["estimate"]
            row[f"{key}_lower"] = 0.0 if x is None else x["lower"]
            row[f"{key}_upper"] = 0.0 if x is None else x["upper"]
            row[f"{key}_p_value"] = np.nan if x is None else x["p_value"]
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- combine
def assess(trial: TrialData, oof: dict[str, pd.DataFrame], seed: int, *, larger_is_better: bool = True,
           n_groups: int = 5, n_boot: int = 200, level: float = 0.95,
           blp_columns=None, failed: dict[str, str] | None = None) -> dict[str, pd.DataFrame]:
    """Every validation table from the methods' out-of-fold fits (``{method: cross_fit(...)}``).

    All methods must share the folds of :func:`validation_folds` (same ``seed``); raises otherwise.
    ``failed``: {method: error} of methods whose cross-fitting failed (listed in the verdict).
    Returns {table name: DataFrame} for :data:`VALIDATION_TABLES`.
    """
    fold = validation_folds(trial, seed, int(max(f["fold"].max() for f in oof.values()) + 1)
                            if oof else DEFAULT_FOLDS)
    for m, f in oof.items():
        if len(f) != trial.n or not np.array_equal(f["fold"].to_numpy(), fold):
            raise ValueError(f"out-of-fold fits of '{m}' do not match the trial's validation folds "
                             f"(seed {seed}); rerun cross_fit with the same seed")
    sc = dr_scores(trial, fold)
    cl = trial.cluster
    gam = sc["gamma"].to_numpy()
    cal, gat, rat, toc = [], [], [], []
    for i, (m, f) in enumerate(oof.items()):
        tau = f["cate"].to_numpy(dtype=float)
        cal.append(calibration(gam, tau, cl, level, fold=fold).assign(method=m))
        gat.append(gates(gam, tau, cl, n_groups, level, fold=fold).assign(method=m))
        r, t = rate(gam, tau, cl, trial.treatment, seeds.rng(seed, "validation", "rate", m),
                    larger_is_better=larger_is_better, n_boot=n_boot, level=level, fold=fold)
        rat.append(r.assign(method=m))
        toc.append(t.assign(method=m))

    def front(parts, cols):
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=float) for c in ["method"] + cols})
        d = pd.concat(parts, ignore_index=True)
        return d[["method"] + [c for c in d.columns if c != "method"]]

    tables = {
        "oof_cates": front([f[["row", "cluster", "fold", "cate", "decision"]].assign(method=m)
                            for m, f in oof.items()], ["row", "cluster", "fold", "cate", "decision"]),
        "calibration": front(cal, ["term", "estimate", "se", "df", "p_value", "lower", "upper"]),
        "blp": best_linear_projection(gam, trial.frame, list(trial.covariates if blp_columns is None
                                                             else blp_columns), cl, level),
        "gates": front(gat, ["group", "n", "tau_mean", "estimate", "se", "df", "lower", "upper", "p_value"]),
        "rate": front(rat, ["target", "estimate", "se", "lower", "upper", "p_value"]),
        "toc": front(toc, ["q", "estimate", "se", "lower", "upper"]),
        "model_selection": model_selection(sc, trial.outcome, trial.treatment,
                                           {m: f["cate"].to_numpy(float) for m, f in oof.items()}, cl,
                                           seeds.rng(seed, "validation", "model_selection"), n_boot, level),
        "policy_value": policy_value(sc, {m: f["decision"].to_numpy() for m, f in oof.items()}, cl,
                                     larger_is_better=larger_is_better, level=level, fold=fold),
    }
    tables["verdict"] = verdict(tables)
    if failed:
        extra = pd.DataFrame({"method": list(failed), "credible": False,
                              "verdict": [f"validation failed: {e}" for e in failed.values()]})
        tables["verdict"] = pd.concat([tables["verdict"], extra], ignore_index=True)
        tables["verdict"]["credible"] = tables["verdict"]["credible"].astype(bool)
    return tables


def verdict(tables: dict[str, pd.DataFrame], alpha: float = 0.05) -> pd.DataFrame:
    """One row per method: is its heterogeneity credible? ``credible`` = the calibration test's
    differential coefficient is significantly positive (one-sided p < ``alpha``); ``verdict`` says
    so in plain words, with the GATES top-minus-bottom and the AUTOC interval as support."""
    cal = tables["calibration"]
    out = []
    for m in dict.fromkeys(cal["method"]):
        d = cal[(cal["method"] == m) & (cal["term"] == "differential")].iloc[0]
        gt = tables["gates"].query("method == @m and group == 'top_minus_bottom'")
        au = tables["rate"].query("method == @m and target == 'AUTOC'")
        p = d["p_value"]
        if not np.isfinite(p):
            cred, words = False, "predicts no heterogeneity (constant CATE)"
        elif p < alpha:
            cred, words = True, (f"credible heterogeneity: out-of-fold CATEs predict who benefits more "
                                 f"(calibration slope {d['estimate']:.2f}, one-sided p = {p:.3g})")
        else:
            cred, words = False, (f"no evidence of real heterogeneity: out-of-fold CATEs do not predict "
                                  f"the doubly robust effects (slope {d['estimate']:.2f}, p = {p:.3g})")
        out.append({"method": m, "credible": bool(cred), "differential": d["estimate"], "p_value": p,
                    "gates_top_minus_bottom": gt["estimate"].iloc[0] if len(gt) else np.nan,
                    "gates_lower": gt["lower"].iloc[0] if len(gt) else np.nan,
                    "gates_upper": gt["upper"].iloc[0] if len(gt) else np.nan,
                    "autoc": au["estimate"].iloc[0] if len(au) else np.nan,
                    "autoc_lower": au["lower"].iloc[0] if len(au) else np.nan,
                    "autoc_upper": au["upper"].iloc[0] if len(au) else np.nan,
                    "verdict": words})
    return pd.DataFrame(out, columns=["method", "credible", "differential", "p_value",
                                      "gates_top_minus_bottom", "gates_lower", "gates_upper", "autoc",
                                      "autoc_lower", "autoc_upper", "verdict"])


def verdict_text(verdict_table: pd.DataFrame) -> str:
    """The plain-words first paragraph of a report."""
    ok = verdict_table["credible"].astype(bool).to_numpy()
    failed = verdict_table["verdict"].astype(str).str.startswith("validation failed").to_numpy()
    cred = verdict_table.loc[ok, "method"].tolist()
    rest = verdict_table.loc[~ok & ~failed, "method"].tolist()
    bad = verdict_table.loc[failed, "method"].tolist()
    if cred:
        head = (f"Credible heterogeneity (calibration test, 5% level, cluster-robust CR2): "
                f"{', '.join(cred)}.")
    else:
        head = ("No method shows credible heterogeneity: no method's out-of-fold CATEs predict the "
                "doubly robust treatment effects better than chance (calibration test, 5% level, CR2).")
    tail = f" No evidence for: {', '.join(rest)}." if cred and rest else ""
    tail += f" Validation failed for: {', '.join(bad)}." if bad else ""
    return head + tail + (" The spread of the in-sample CATEs alone is not evidence of heterogeneity.")
