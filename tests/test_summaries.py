"""CATE summaries against hand computations, closed forms and scipy/scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clusterhte.data.trial import TrialDataError
from clusterhte.evaluate import summaries as S


@pytest.fixture(scope="module")
def toy():
    """A trial frame (12 clusters x 10) and three methods' CATEs with known structure."""
    rng = np.random.default_rng(3)
    J, m = 12, 10
    cl = np.repeat(np.arange(100, 100 + J), m)
    n = J * m
    x1, x2 = rng.normal(size=n), rng.binomial(1, 0.4, n).astype(float)
    v = np.repeat(rng.normal(size=J), m)
    a = np.repeat(np.arange(J) % 2, m).astype(float)
    y = 1 + x1 + a * (0.5 + x1) + np.repeat(rng.normal(0, 0.5, J), m) + rng.normal(size=n)
    frame = pd.DataFrame({"cluster": cl, "treatment": a, "outcome": y, "x1": x1, "x2": x2, "v": v})
    lin = 2.0 + 3.0 * x1 - 1.0 * x2 + 0.5 * v
    noisy = lin + rng.normal(0, 2, n)
    fits = pd.concat([
        pd.DataFrame({"method": "lin", "row": np.arange(n), "cluster": cl, "cate": lin}),
        pd.DataFrame({"method": "noisy", "row": np.arange(n), "cluster": cl, "cate": noisy,
                      "lower": noisy - 1, "upper": noisy + 1}),
        pd.DataFrame({"method": "lmm", "row": np.arange(n), "cluster": cl, "cate": lin - 1.5}),
    ], ignore_index=True)
    # shuffle the rows: every summary must align by ``row``
    fits = fits.sample(frac=1, random_state=1).reset_index(drop=True)
    return frame, fits, {"lin": lin, "noisy": noisy, "lmm": lin - 1.5}


def _cr1(y, X, g):
    """Hand CR1 sandwich: (X'X)^-1 sum_g X_g'u_g u_g'X_g (X'X)^-1 * G/(G-1) * (n-1)/(n-k)."""
    n, k = X.shape
    bread = np.linalg.inv(X.T @ X)
    beta = bread @ X.T @ y
    u = y - X @ beta
    meat = np.zeros((k, k))
    for gg in np.unique(g):
        s = X[g == gg].T @ u[g == gg]
        meat += np.outer(s, s)
    G = len(np.unique(g))
    V = bread @ meat @ bread * G / (G - 1) * (n - 1) / (n - k)
    return beta, np.sqrt(np.diag(V))


# ------------------------------------------------------------------------------ ATE / quantiles
def test_ate_table(toy):
    frame, fits, c = toy
    t = S.ate_table(fits).set_index("method")
    for m in c:
        assert t.loc[m, "ate"] == pytest.approx(c[m].mean())
        assert t.loc[m, "cate_sd"] == pytest.approx(c[m].std(ddof=1))
    assert t["interval"].eq("none").all() and t["lower"].isna().all()
    # interval from the method's own columns
    f2 = fits.assign(ate_lower=-1.0, ate_upper=4.0)
    assert S.ate_table(f2).set_index("method").loc["lin", ["lower", "upper"]].tolist() == [-1.0, 4.0]
    # interval from draws: quantiles of the per-draw mean
    rng = np.random.default_rng(0)
    d = c["lin"][:, None] + rng.normal(size=(len(frame), 400))
    r = S.ate_table(fits, draws={"lin": d}).set_index("method").loc["lin"]
    lo, hi = np.quantile(d.mean(axis=0), [0.025, 0.975])
    assert (r["lower"], r["upper"], r["interval"]) == (pytest.approx(lo), pytest.approx(hi), "draws")


def test_cate_quantiles(toy):
    _, fits, c = toy
    q = S.cate_quantiles(fits, probs=(0.1, 0.5)).set_index("method")
    assert q.loc["noisy", "q10"] == pytest.approx(np.quantile(c["noisy"], 0.1))
    assert q.loc["noisy", "q50"] == pytest.approx(np.median(c["noisy"]))
    assert q.loc["lin", "max"] == pytest.approx(c["lin"].max())


# ------------------------------------------------------------------------------ clusters / subgroups
def test_cluster_average_by_hand(toy):
    frame, fits, c = toy
    ca = S.cluster_average(fits)
    hand = pd.Series(c["noisy"]).groupby(frame["cluster"].to_numpy()).mean()
    got = ca[ca["method"] == "noisy"].set_index("cluster")["cate"]
    pd.testing.assert_series_equal(got, hand, check_names=False, check_index_type=False)
    r = ca[ca["method"] == "noisy"].set_index("cluster")["rank"]
    assert r[hand.idxmax()] == 1 and r[hand.idxmin()] == len(hand)
    # intervals from draws
    rng = np.random.default_rng(1)
    d = rng.normal(size=(len(frame), 300))
    ca = S.cluster_average(fits.drop(columns="cluster"), cluster=frame["cluster"].to_numpy(), draws={"lin": d})
    lo = ca[ca["method"] == "lin"]["lower"].to_numpy()
    per = pd.DataFrame(d).groupby(frame["cluster"].to_numpy()).mean().to_numpy()
    np.testing.assert_allclose(lo, np.quantile(per, 0.025, axis=1))
    assert ca[ca["method"] == "noisy"]["lower"].isna().all()


def test_cluster_average_needs_cluster(toy):
    _, fits, _ = toy
    with pytest.raises(TrialDataError, match="cluster"):
        S.cluster_average(fits.drop(columns="cluster"))


def test_subgroup_table_by_hand(toy):
    frame, fits, c = toy
    groups = {("x2", "x2 = 1"): frame["x2"].to_numpy() == 1,
              ("x2", "x2 = 0"): lambda f: f["x2"].to_numpy() == 0}
    t = S.subgroup_table(fits, frame, groups, larger_is_better=False, cutoff=2.0)
    r = t[(t["method"] == "noisy") & (t["group"] == "x2 = 1")].iloc[0]
    sel = frame["x2"].to_numpy() == 1
    assert r["n"] == sel.sum() and r["n_clusters"] == frame.loc[sel, "cluster"].nunique()
    assert r["cate"] == pytest.approx(c["noisy"][sel].mean())
    assert r["sd"] == pytest.approx(c["noisy"][sel].std(ddof=1))
    assert r["share_benefit"] == pytest.approx(np.mean(c["noisy"][sel] < 2.0))
    # the group-size-weighted average of the two subgroups is the ATE
    s = t[t["method"] == "lin"]
    assert np.average(s["cate"], weights=s["n"]) == pytest.approx(c["lin"].mean())
    with pytest.raises(TrialDataError, match="boolean"):
        S.subgroup_table(fits, frame, {("x", "bad"): np.ones(3)})


def test_subgroup_difference_in_means(toy):
    frame, _, _ = toy
    sel = frame["x2"].to_numpy() == 0
    t = S.subgroup_difference_in_means(frame, {("x2", "0"): sel}).iloc[0]
    f = frame[sel]
    diff = f.loc[f.treatment == 1, "outcome"].mean() - f.loc[f.treatment == 0, "outcome"].mean()
    assert t["cate"] == pytest.approx(diff)
    X = np.column_stack([np.ones(len(f)), f["treatment"]])
    _, se = _cr1(f["outcome"].to_numpy(), X, f["cluster"].to_numpy())
    assert t["se"] == pytest.approx(se[1])
    q = stats.t.ppf(0.975, f["cluster"].nunique() - 1)
    assert t["upper"] - t["lower"] == pytest.approx(2 * q * se[1])


# ------------------------------------------------------------------------------ best linear projection
def test_blp_regresses_dr_scores_with_cr2(toy):
    """The BLP is the CR2 OLS of the cluster-cross-fitted DR scores, not of the estimated CATEs."""
    from clusterhte.data.trial import TrialData
    from clusterhte.evaluate import validation as V
    from clusterhte.evaluate.cr2 import cr2_ols

    frame, fits, _ = toy
    b = S.best_linear_projection(fits, frame, ["x1", "x2"], seed=5).set_index("term")
    td = TrialData(frame[["cluster", "treatment", "outcome", "x1", "x2"]], "crt", ("x1", "x2"))
    gam = V.dr_scores(td, V.validation_folds(td, 5))["gamma"].to_numpy()
    X = frame[["x1", "x2"]].to_numpy()
    X = np.column_stack([np.ones(len(X)), (X - X.mean(0)) / X.std(0, ddof=1)])
    f = cr2_ols(gam, X, frame["cluster"])
    np.testing.assert_allclose(b["estimate"], f.coef, rtol=1e-10)
    np.testing.assert_allclose(b["se"], f.se, rtol=1e-10)
    np.testing.assert_allclose(b["df"], [f.df(c) for c in np.eye(3)], rtol=1e-10)
    # an honest interval: the intercept (DR ATE, true 0.5 + E x1) has real width
    assert b.loc["intercept", "upper"] - b.loc["intercept", "lower"] > 0.1
    assert b.loc["x1", "estimate"] > 0  # the true modifier


def test_blp_constant_covariate_raises(toy):
    frame, fits, _ = toy
    with pytest.raises(TrialDataError, match=r"\['k'\] are constant"):
        S.best_linear_projection(fits, frame.assign(k=1.0), ["x1", "k"])


# ------------------------------------------------------------------------------ benefit / agreement
def test_share_benefit(toy):
    _, fits, c = toy
    up = S.share_benefit(fits).set_index("method")
    down = S.share_benefit(fits, cutoff=1.0, larger_is_better=False).set_index("method")
    assert up.loc["noisy", "share_benefit"] == pytest.approx(np.mean(c["noisy"] > 0))
    assert down.loc["noisy", "share_benefit"] == pytest.approx(np.mean(c["noisy"] < 1.0))
    assert up.loc["noisy", "share_sure"] == pytest.approx(np.mean(c["noisy"] - 1 > 0))
    assert down.loc["noisy", "share_sure"] == pytest.approx(np.mean(c["noisy"] + 1 < 1.0))
    assert np.isnan(up.loc["lin", "share_sure"])


def test_agreement_matrix_against_scipy_and_sklearn(toy):
    from sklearn.metrics import cohen_kappa_score

    _, fits, c = toy
    a = S.agreement_matrix(fits, cutoff=2.0, larger_is_better=False)
    assert len(a) == 9
    r = a.set_index(["method_a", "method_b"])
    assert r.loc[("lin", "noisy"), "spearman"] == pytest.approx(stats.spearmanr(c["lin"], c["noisy"]).statistic)
    assert r.loc[("noisy", "lin"), "spearman"] == pytest.approx(r.loc[("lin", "noisy"), "spearman"])
    assert r.loc[("lin", "lmm"), "spearman"] == pytest.approx(1.0)  # shifted: same ranks
    dl, dn = c["lin"] < 2.0, c["noisy"] < 2.0
    assert r.loc[("lin", "noisy"), "decision_agreement"] == pytest.approx(np.mean(dl == dn))
    assert r.loc[("lin", "noisy"), "kappa"] == pytest.approx(cohen_kappa_score(dl, dn))
    for m in c:
        assert r.loc[(m, m), "spearman"] == pytest.approx(1.0) and r.loc[(m, m), "decision_agreement"] == 1.0


def test_agreement_requires_same_rows(toy):
    _, fits, _ = toy
    short = fits.drop(fits.index[(fits["method"] == "noisy") & (fits["row"] == 5)])
    with pytest.raises(TrialDataError, match="noisy"):
        S.agreement_matrix(short)
    dup = pd.concat([fits, fits[(fits["method"] == "lin") & (fits["row"] == 3)]])
    with pytest.raises(TrialDataError, match="'lin' has duplicate row"):
        S.agreement_matrix(dup)


def test_missing_column_is_named(toy):
    _, fits, _ = toy
    with pytest.raises(TrialDataError, match=r"missing column\(s\) \['cate'\]"):
        S.ate_table(fits.drop(columns="cate"))


# ------------------------------------------------------------------------------ diagnostics
def test_marginal_vs_conditional_random_intercept():
    rng = np.random.default_rng(5)
    cl = np.repeat(["a", "b", "c", "d"], [3, 5, 2, 4])
    b = dict(zip("abcd", [1.0, -2.0, 0.5, 0.0]))
    mg = rng.normal(size=cl.size)
    cd = mg + np.array([b[k] for k in cl])
    overall, per = S.marginal_vs_conditional(mg, cd, cl)
    np.testing.assert_allclose(per["difference"], [1.0, -2.0, 0.5, 0.0])
    np.testing.assert_allclose(per["difference_sd"], 0.0, atol=1e-12)
    assert per["n"].tolist() == [3, 5, 2, 4]
    d = cd - mg
    assert overall["rms_difference"].iloc[0] == pytest.approx(np.sqrt(np.mean(d ** 2)))
    assert overall["cluster_share"].iloc[0] == pytest.approx(d.var() / cd.var())
    with pytest.raises(TrialDataError, match="lengths differ"):
        S.marginal_vs_conditional(mg, cd[:-1], cl)


def test_posterior_predictive_check():
    rng = np.random.default_rng(6)
    cl = np.repeat(np.arange(10), 8)
    y = rng.normal(size=80) + np.repeat(rng.normal(0, 3, 10), 8)
    up = S.posterior_predictive_check(y, y[None, :] + np.arange(1, 51)[:, None], cl).set_index("statistic")
    assert up.loc["mean", "p_value"] == 1.0 and up.loc["max", "p_value"] == 1.0
    assert up.loc["mean", "replicated_mean"] == pytest.approx(y.mean() + 25.5)
    # shifts leave the SDs unchanged: T(y_rep) == T(y) in every draw -> p = 1 (>=)
    assert up.loc["cluster_mean_sd", "observed"] == pytest.approx(
        pd.Series(y).groupby(cl).mean().std(ddof=1))
    # replicated data without a cluster effect: the between-cluster SD is far too small
    Y = rng.normal(y.mean(), y.std(), size=(200, 80))
    p = S.posterior_predictive_check(y, Y, cl).set_index("statistic")["p_value"]
    assert p["cluster_mean_sd"] < 0.05
    with pytest.raises(TrialDataError, match="n_draws"):
        S.posterior_predictive_check(y, Y[:, :10])


def test_compare_to_reference(toy):
    _, fits, c = toy
    r = S.compare_to_reference(fits, "lmm").set_index("method")
    assert r.loc["lin", "mean_difference"] == pytest.approx(1.5)
    assert r.loc["lin", "rmsd"] == pytest.approx(1.5)
    assert r.loc["lin", "pearson"] == pytest.approx(1.0)
    assert r.loc["lmm", "rmsd"] == 0.0
    assert r.loc["noisy", "pearson"] == pytest.approx(np.corrcoef(c["noisy"], c["lmm"])[0, 1])
    with pytest.raises(TrialDataError, match="'gamm' is not in the fits"):
        S.compare_to_reference(fits, "gamm")
