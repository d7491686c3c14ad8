"""Stages of a trial analysed once (TASSH, CCT, a user's trial): fit each method on the whole trial
and predict for the same rows, then stack the methods' CATEs for the summaries and the report."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from clusterhte.data.trial import TrialData
from clusterhte.stages.fitting import fit_replicates


def fit(trial: TrialData, method: str, params: dict, seed: int, *, larger_is_better: bool = True,
        log=sys.stderr, threads: int = 1) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """CATEs of ``method`` fitted on every row of ``trial`` (rows in the trial's order).

    Every method's ``cate``, ``lower``, ``upper``, ``ate``, ``ate_lower``, ``ate_upper`` and draws
    are on the Delta scale, E[Y(1) - Y(0) | x]: the weighting estimators (Suk & Park's W-*/WS-*,
    whose score estimates Delta(x)/2 with the +-1 treatment coding of R's ``personalized``; their
    ``CateResult.info["scale"] == "delta/2"``) are doubled (:func:`to_delta_scale`); ``score`` keeps
    each method's raw benefit score (equal to ``cate`` for the other methods). The decision
    (score above 0) is the same on either scale.

    Returns (fits, ppc, draws). ``fits`` has the columns of the simulation fits plus ``cluster``,
    ``score`` and, for
    methods with an explicit cluster effect (LMM, BART family), the outcome predictions at the
    observed treatment without (``y_marginal``) and with (``y_conditional``) it, else NaN.
    ``ppc`` is the posterior predictive check of the outcome for the Bayesian methods (empty
    otherwise). ``draws``: the CATE draws (posterior or cluster bootstrap; one column per draw,
    one row per trial row, float32) that give subgroup and cluster-average intervals; no columns
    for methods without draws. The method's random stream depends on the root ``seed`` and the method only, so
    the workflow and ``clusterhte fit`` give identical CATEs for the same trial, method and seed.
    A failing fit raises: there is no study to go on with.
    """
    from clusterhte.evaluate.summaries import posterior_predictive_check

    extra = {}

    def diagnostics(rep, est, train, results):
        try:
            extra["outcome"] = est.predict_outcome(train)
        except NotImplementedError:
            pass
        r = results["all"]
        extra["score"] = r.point.copy()
        to_delta_scale(r)
        extra["draws"] = r.draws

    out = fit_replicates([(0, trial, {"all": trial})], study="apply", cell="all",
                         method=method, params=params, root_seed=seed,
                         larger_is_better=larger_is_better, log=log, total=1, threads=threads,
                         on_fitted=diagnostics)
    if out["failed"].any():
        raise RuntimeError(f"method '{method}' failed on {trial.name or 'the trial'}: {out['error'].iloc[0]}")
    out = out.drop(columns=["rep", "split", "failed", "error"])
    out.insert(1, "cluster", np.asarray(trial.cluster))
    out.insert(out.columns.get_loc("upper") + 1, "score", extra["score"])
    o = extra.get("outcome")
    out["y_marginal"] = o.marginal if o is not None else np.nan
    out["y_conditional"] = o.conditional if o is not None else np.nan
    if o is not None and o.replicates is not None:
        ppc = posterior_predictive_check(trial.outcome, o.replicates, np.asarray(trial.cluster))
    else:
        ppc = pd.DataFrame({c: pd.Series(dtype=float) for c in
                            ("observed", "replicated_mean", "lower", "upper", "p_value")})
        ppc.insert(0, "statistic", pd.Series(dtype=str))
    return out, ppc, draws_table(extra["draws"], trial.n)


SCALE_FACTORS = {"delta": 1.0, "delta/2": 2.0}


def to_delta_scale(r) -> None:
    """Put a :class:`~clusterhte.methods.CateResult` on the Delta scale in place (point, interval,
    draws, ATE interval), from its ``info["scale"]`` (absent: already Delta)."""
    scale = r.info.get("scale", "delta")
    if scale not in SCALE_FACTORS:
        raise ValueError(f"unknown CATE scale {scale!r}; known: {sorted(SCALE_FACTORS)}")
    f = SCALE_FACTORS[scale]
    if f == 1.0:
        return
    r.point = r.point * f
    r.lower, r.upper = r.lower * f, r.upper * f
    if r.draws is not None:
        r.draws = r.draws * f
    if "ate_interval" in r.info:
        lo, hi = r.info["ate_interval"]
        r.info["ate_interval"] = (lo * f, hi * f)
    r.info["scale"] = "delta"
    r.info["scale_factor"] = f


def draws_table(draws: np.ndarray | None, n: int) -> pd.DataFrame:
    """CATE draws as a table (columns d0, d1, ...; float32); no columns when there are none."""
    if draws is None:
        return pd.DataFrame(index=pd.RangeIndex(n))
    D = np.asarray(draws, dtype=np.float32)
    return pd.DataFrame(D, columns=[f"d{j}" for j in range(D.shape[1])])


def draws_array(table: pd.DataFrame) -> np.ndarray | None:
    """Inverse of :func:`draws_table`."""
    return table.to_numpy(dtype=float) if table.shape[1] else None


def stack(fits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Long table of every method's CATEs: method, row, cluster, cate, lower, upper, decision, ..."""
    return pd.concat([f.assign(method=m) for m, f in fits.items()], ignore_index=True)[
        ["method"] + [c for c in next(iter(fits.values())).columns]]


def default_subgroups(trial: TrialData, max_columns: int = 6):
    """Subgroups for a trial without its own definitions: each moderator (else covariate), binary
    ones by level, continuous ones split at the median; at most ``max_columns`` columns."""
    cols = list(trial.moderators or trial.covariates)[:max_columns]

    def masks(frame: pd.DataFrame) -> dict:
        out = {}
        for c in cols:
            v = frame[c].to_numpy(dtype=float)
            levels = np.unique(v)
            if levels.size <= 2:
                for lv in levels:
                    out[(c, f"{c} = {lv:g}")] = v == lv
            else:
                med = float(np.median(v))
                out[(c, f"{c} >= {med:.3g}")] = v >= med
                out[(c, f"{c} < {med:.3g}")] = v < med
        return out

    return masks


def summarise(trial: TrialData, fits: dict[str, pd.DataFrame], *, larger_is_better: bool = True,
              subgroups=None, reference: str | None = "lmm",
              ppc: dict[str, pd.DataFrame] | None = None,
              draws: dict[str, np.ndarray | None] | None = None) -> dict[str, pd.DataFrame]:
    """Every summary table of one analysed trial (names are the table names of the workflow).

    ``cates`` the stacked CATEs; ``ate`` ATE with interval per method; ``quantiles`` the CATE
    distribution; ``clusters`` cluster-average CATEs; ``subgroups`` subgroup-average CATEs plus the
    model-free difference in means; ``blp`` the best linear projection on the covariates;
    ``benefit`` the share recommended; ``agreement`` between methods; ``reference`` each method
    against ``reference`` (empty when that method was not fitted); ``marginal_conditional``
    outcome predictions without vs with the cluster effect (methods that give them); ``ppc`` the
    posterior predictive checks of the Bayesian methods.
    """
    from clusterhte.evaluate import summaries as S

    fits_long = stack(fits)
    groups = subgroups or default_subgroups(trial)
    frame = trial.frame
    draws = {m: d for m, d in (draws or {}).items() if d is not None}
    sub = S.subgroup_table(fits_long, frame, groups, larger_is_better=larger_is_better, draws=draws)
    dim = S.subgroup_difference_in_means(frame, groups)
    out = {
        "cates": fits_long,
        "ate": S.ate_table(fits_long),
        "quantiles": S.cate_quantiles(fits_long),
        "clusters": S.cluster_average(fits_long, draws=draws),
        "subgroups": pd.concat([sub, dim], ignore_index=True),
        "blp": S.best_linear_projection(fits_long, frame, list(trial.covariates)),
        "benefit": S.share_benefit(fits_long, larger_is_better=larger_is_better),
        "agreement": S.agreement_matrix(fits_long, larger_is_better=larger_is_better),
    }
    mc = []
    for m, f in fits.items():
        if "y_marginal" in f.columns and np.isfinite(f["y_marginal"]).all():
            overall, _ = S.marginal_vs_conditional(f["y_marginal"], f["y_conditional"], f["cluster"])
            mc.append(overall.assign(method=m))
    out["marginal_conditional"] = (pd.concat(mc, ignore_index=True) if mc else
                                   pd.DataFrame({"method": pd.Series(dtype=str)}))
    parts = [t.assign(method=m) for m, t in (ppc or {}).items() if len(t)]
    out["ppc"] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"method": pd.Series(dtype=str)})
    if reference and reference in fits:
        out["reference"] = S.compare_to_reference(fits_long, reference, larger_is_better=larger_is_better)
    else:
        out["reference"] = pd.DataFrame({"method": pd.Series(dtype=str), "reference": pd.Series(dtype=str)})
    return out


SUMMARY_TABLES = ["cates", "ate", "quantiles", "clusters", "subgroups", "blp", "benefit", "agreement",
                  "reference", "marginal_conditional", "ppc"]


def subgroups_for(dataset: str):
    """The subgroup definitions of a named trial (TASSH: spec section 5.3), else None = default."""
    if dataset == "tassh":
        from clusterhte.data.tassh import subgroup_masks
        return subgroup_masks
    return None
