"""Cluster-aware validation (clusterhte.evaluate.validation): identities, known answers, CLI.

Known-answer checks (issue 13): with tau = 0 the calibration test's heterogeneity p-value rejects
at most ~alpha of the time and every regime's policy value stays within the treat-all interval;
with a strong modifier it rejects nearly always. Default runs use few replicates (binomial
tolerances); ``-m slow`` runs >= 100 replicates for the LMM and GPBoost and prints the rates.
"""

from __future__ import annotations

import io as _io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clusterhte.data.trial import TrialData
from clusterhte.evaluate import validation as V
from clusterhte.evaluate.cr2 import cr2_ols

from conftest import make_crt

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "data" / "example_crt.csv"
QUICK = {"gpboost": {"learning_rate": 0.1, "max_rounds": 300}}


def _trial_and_scores(seed=3, tau="linear", ate=1.0):
    tr, truth = make_crt(seed, tau, ate=ate)
    fold = V.validation_folds(tr, 7)
    return tr, truth, fold, V.dr_scores(tr, fold)


# ------------------------------------------------------------------------------ design pieces
def test_propensity_crt_and_multisite():
    tr, _ = make_crt(1, "constant")
    assert np.allclose(V.propensity(tr), 0.5)
    f = pd.DataFrame({"cluster": np.repeat([0, 1, 2], 4), "treatment": [1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0],
                      "outcome": np.arange(12.0), "x": np.arange(12.0) % 3})
    ms = TrialData(f, "multisite", ("x",)).validate()
    np.testing.assert_allclose(V.propensity(ms), np.repeat([0.25, 0.5, 0.75], 4))


def test_folds_are_whole_clusters_stratified_and_method_free():
    tr, _ = make_crt(2, "constant", M=8)
    f1 = V.validation_folds(tr, 5)
    f2 = V.validation_folds(tr, 5)
    np.testing.assert_array_equal(f1, f2)
    codes = tr.cluster_codes
    # K capped by the 4 clusters per arm; every fold has a treated and a control cluster
    assert f1.max() + 1 == 4
    for k in range(4):
        arms = set(tr.treatment[f1 == k])
        assert arms == {0.0, 1.0}
    assert all(len(set(f1[codes == c])) == 1 for c in np.unique(codes))


def test_dr_scores_identity_and_unbiased_ate():
    tr, truth, fold, sc = _trial_and_scores()
    y, a, e = tr.outcome, tr.treatment, 0.5
    g = sc["m1"] - sc["m0"] + a * (y - sc["m1"]) / e - (1 - a) * (y - sc["m0"]) / (1 - e)
    np.testing.assert_allclose(sc["gamma"], g)
    np.testing.assert_allclose(sc["gamma"], sc["gamma1"] - sc["gamma0"])
    # outcome models are out-of-fold: changing the outcomes of fold 0 leaves fold 0's m unchanged
    f = tr.frame.copy()
    f.loc[fold == 0, "outcome"] += 100.0
    sc2 = V.dr_scores(TrialData(f, "crt", tr.individual_covariates, tr.cluster_covariates), fold)
    np.testing.assert_allclose(sc2.loc[fold == 0, ["m0", "m1"]], sc.loc[fold == 0, ["m0", "m1"]])
    # the DR mean estimates the ATE (1.0) within its CR2 interval
    r = cr2_ols(sc["gamma"], np.ones((tr.n, 1)), tr.cluster).interval([1.0])
    assert r[3] < truth.mean() < r[4]


# ------------------------------------------------------------------------------ calibration / BLP / GATES
def test_calibration_is_the_ols_of_the_issue():
    tr, truth, fold, sc = _trial_and_scores()
    tau = truth + np.random.default_rng(0).normal(0, 0.1, tr.n)
    cal = V.calibration(sc["gamma"], tau, tr.cluster).set_index("term")
    X = np.column_stack([np.full(tr.n, tau.mean()), tau - tau.mean()])
    b = np.linalg.lstsq(X, sc["gamma"], rcond=None)[0]
    np.testing.assert_allclose(cal["estimate"], b, rtol=1e-10)
    fit = cr2_ols(sc["gamma"], X, tr.cluster)
    np.testing.assert_allclose(cal["se"], fit.se, rtol=1e-10)
    t = b[1] / fit.se[1]
    assert cal.loc["differential", "p_value"] == pytest.approx(stats.t.sf(t, fit.df([0, 1])))
    # the true CATE is calibrated: slope near 1 and clearly positive
    assert cal.loc["differential", "lower"] < 1 < cal.loc["differential", "upper"]
    assert cal.loc["differential", "p_value"] < 1e-4
    # fold-centred differential: the slope of the regression with fold-specific prediction means
    off = truth + 0.5 * fold
    cf = V.calibration(sc["gamma"], off, tr.cluster, fold=fold).set_index("term")
    D = np.column_stack([np.full(tr.n, off.mean()), truth - np.array([truth[fold == k].mean() for k in fold])])
    np.testing.assert_allclose(cf["estimate"], np.linalg.lstsq(D, sc["gamma"], rcond=None)[0], rtol=1e-10)
    # a constant prediction has no differential term
    c = V.calibration(sc["gamma"], np.full(tr.n, 0.7), tr.cluster).set_index("term")
    assert np.isnan(c.loc["differential", "estimate"]) and np.isfinite(c.loc["mean_prediction", "estimate"])


def test_blp_of_dr_scores_recovers_the_modifier():
    tr, truth, fold, sc = _trial_and_scores()
    b = V.best_linear_projection(sc["gamma"], tr.frame, ["X1", "X2"], tr.cluster, standardize=False)
    b = b.set_index("term")
    # tau = 1 + X1: intercept 1, slope 1 on X1, 0 on X2, each within its CR2 interval
    for term, true in (("intercept", 1.0), ("X1", 1.0), ("X2", 0.0)):
        assert b.loc[term, "lower"] < true < b.loc[term, "upper"], term
    with pytest.raises(ValueError, match=r"\['k'\] are constant"):
        V.best_linear_projection(sc["gamma"], tr.frame.assign(k=1.0), ["X1", "k"], tr.cluster)
    # an aliased column (X3 and 1 - X3) gets NaN; the others are the fit without it
    al = V.best_linear_projection(sc["gamma"], tr.frame.assign(X4=1 - tr.frame["X3"]),
                                  ["X1", "X3", "X4"], tr.cluster).set_index("term")
    ref = V.best_linear_projection(sc["gamma"], tr.frame, ["X1", "X3"], tr.cluster).set_index("term")
    assert np.isnan(al.loc["X4", "estimate"])
    np.testing.assert_allclose(al.loc[["intercept", "X1", "X3"], "se"], ref["se"], rtol=1e-10)


def test_gates_groups_and_top_minus_bottom():
    tr, truth, fold, sc = _trial_and_scores()
    g = V.gates(sc["gamma"], truth, tr.cluster, n_groups=4)
    assert list(g["group"]) == ["1", "2", "3", "4", "top_minus_bottom"]
    assert g["n"].iloc[:4].sum() == tr.n
    grp = V.quantile_groups(truth, 4)
    means = [sc["gamma"][grp == k].mean() for k in range(4)]
    np.testing.assert_allclose(g["estimate"].iloc[:4], means, rtol=1e-10)
    assert g["estimate"].iloc[4] == pytest.approx(means[3] - means[0])
    assert np.all(np.diff(g["estimate"].iloc[:4]) > 0)          # increasing with true tau
    assert g["lower"].iloc[4] > 0
    # ties stay in one group
    assert len(np.unique(V.quantile_groups(np.array([1.0, 1, 1, 2, 2, 3]), 3))) <= 3


# ------------------------------------------------------------------------------ RATE
def _brute_toc(gamma, prio):
    """AUTOC and Qini by the definition, rows in decreasing priority (distinct priorities)."""
    o = np.argsort(-prio)
    g = gamma[o]
    n = g.size
    toc = np.array([g[: i + 1].mean() for i in range(n)]) - g.mean()
    q = np.arange(1, n + 1) / n
    return toc.mean(), (q * toc).mean()


def test_rate_matches_definition_and_ties_average():
    rng = np.random.default_rng(4)
    n = 40
    gamma, prio = rng.normal(size=n), rng.normal(size=n)
    cl, a = np.repeat(np.arange(10), 4), np.repeat(np.arange(10) % 2, 4)
    r, toc = V.rate(gamma, prio, cl, a, np.random.default_rng(0), n_boot=50)
    au, qi = _brute_toc(gamma, prio)
    assert r.set_index("target").loc["AUTOC", "estimate"] == pytest.approx(au)
    assert r.set_index("target").loc["QINI", "estimate"] == pytest.approx(qi)
    assert toc["estimate"].iloc[-1] == pytest.approx(0.0, abs=1e-12)
    # smaller-is-better flips both the ranking and the scores: same RATE as the negated problem
    r2, _ = V.rate(-gamma, -prio, cl, a, np.random.default_rng(0), larger_is_better=False, n_boot=50)
    np.testing.assert_allclose(r2["estimate"], r["estimate"])
    # ties: the RATE is the average over random tie-breaking
    tied = np.round(prio)
    r3, _ = V.rate(gamma, tied, cl, a, np.random.default_rng(0), n_boot=10)
    sims = np.mean([_brute_toc(gamma, tied + 1e-9 * rng.permutation(n))[0] for _ in range(3000)])
    assert r3.set_index("target").loc["AUTOC", "estimate"] == pytest.approx(sims, abs=0.01)


# ------------------------------------------------------------------------------ model selection, policy
def test_model_selection_and_policy_value_identities():
    tr, truth, fold, sc = _trial_and_scores()
    noisy = truth + np.random.default_rng(1).normal(0, 2.0, tr.n)
    ms = V.model_selection(sc, tr.outcome, tr.treatment, {"truth": truth, "noisy": noisy}, tr.cluster,
                           np.random.default_rng(0), n_boot=100)
    dr = ms[ms["loss"] == "dr"].set_index("method")
    assert dr.index[0] == "truth"                                # the true CATE has the least loss
    assert dr.loc["truth", "difference"] == 0
    assert dr.loc["noisy", "value"] == pytest.approx(np.mean((sc["gamma"] - noisy) ** 2))
    assert dr.loc["noisy", "lower"] > 0                         # clearly worse
    const = V.constant_predictor(sc["gamma"].to_numpy(), fold)
    assert dr.loc[V.CONSTANT, "value"] == pytest.approx(np.mean((sc["gamma"] - const) ** 2))
    assert len(np.unique(const[fold == 0])) == 1
    pv = V.policy_value(sc, {"truth": (truth > 0).astype(int)}, tr.cluster).set_index("method")
    assert pv.loc["treat all", "value"] == pytest.approx(sc["gamma1"].mean())
    assert pv.loc["treat none", "value"] == pytest.approx(sc["gamma0"].mean())
    d = (truth > 0)
    assert pv.loc["truth", "gain_vs_all"] == pytest.approx(-np.mean(~d * sc["gamma"]))
    assert pv.loc["truth", "share_treated"] == pytest.approx(d.mean())
    down = V.policy_value(sc, {"truth": (truth > 0).astype(int)}, tr.cluster, larger_is_better=False)
    assert down.set_index("method").loc["truth", "gain_vs_all"] == pytest.approx(-pv.loc["truth", "gain_vs_all"])


@pytest.mark.parametrize("method", ["lmm", "gamm", "ribart", "mixedbart", "stan4bart", "mbcf", "cf", "merf",
                                    "megb", "gpboost", "mermboost"])
def test_every_crt_method_cross_fits_with_its_validation_settings(method):
    """The workflow cross-fits every method with its interval-only refits switched off
    (``point_params``); each must accept those settings (the causal forest once refused
    ``n_half_samples = 0``, and its validation failed in every run)."""
    from clusterhte.evaluate.battery import settings

    tr, _ = make_crt(21, "linear", M=16, size=12)
    oof = V.cross_fit(tr, method, settings("quick").get(method, {}), 4, log=_io.StringIO())
    assert len(oof) == tr.n and np.isfinite(oof["cate"]).all()


def test_cross_fit_doubles_weighting_scores_and_keeps_decisions():
    from clusterhte.simulate import otr_designs

    df = otr_designs.simulate_replicate("d1", 12, 40, np.random.default_rng(5))
    tr = otr_designs.trial_from_replicate(df, "train")
    a = V.cross_fit(tr, "w-aug", {}, 3, log=_io.StringIO())
    fold = a["fold"].to_numpy()
    from clusterhte import methods
    est = methods.make("w-aug", V.point_params("w-aug", {}), random_state=__import__("clusterhte").seeds.int_seed(3, "validation", 0, "w-aug"))
    est.fit(tr.subset(fold != 0))
    r = est.predict(tr.subset(fold == 0))
    assert r.info["scale"] == "delta/2"
    np.testing.assert_allclose(a.loc[fold == 0, "cate"], 2 * r.point)
    np.testing.assert_array_equal(a.loc[fold == 0, "decision"], r.decision)
    T = V.assess(tr, {"w-aug": a}, 3, n_boot=20, failed={"q-rs": "RuntimeError: boom"})
    assert set(T) == set(V.VALIDATION_TABLES)
    assert T["verdict"]["credible"].dtype == bool
    assert "Validation failed for: q-rs." in V.verdict_text(T["verdict"])


# ------------------------------------------------------------------------------ known answers
def test_crossfit_mean_adds_the_between_fold_covariance():
    """One fold: the pooled CR2 interval. Fold means that agree more than their within-fold
    variances allow (positively correlated folds): the pooled variance plus
    (1 - sum w_k^2) (mean V_k - S_F^2). Fold means that disagree: no correction (the cap)."""
    rng = np.random.default_rng(4)
    cl = np.repeat(np.arange(40), 10)
    fold = cl % 4
    x = rng.normal(size=cl.size) + rng.normal(size=40)[cl]
    one = np.ones((x.size, 1))
    pooled = cr2_ols(x, one, cl)
    single = V.crossfit_mean(x, cl, np.zeros_like(fold))
    assert single["crossfit_var"] == 0.0
    assert single["se"] == pytest.approx(np.sqrt(pooled.vcov[0, 0]))
    assert single["estimate"] == pytest.approx(x.mean())
    same = x - np.array([x[fold == k].mean() for k in range(4)])[fold] + x.mean()  # equal fold means
    r = V.crossfit_mean(same, cl, fold)
    Vk = [cr2_ols(same[fold == k], one[fold == k], cl[fold == k]).vcov[0, 0] for k in range(4)]
    assert r["crossfit_var"] == pytest.approx((1 - 4 * 0.25 ** 2) * np.mean(Vk))
    assert r["se"] ** 2 == pytest.approx(cr2_ols(same, one, cl).vcov[0, 0] + r["crossfit_var"])
    apart = x + 5.0 * fold                                  # fold means far apart: S_F^2 >> V_k
    assert V.crossfit_mean(apart, cl, fold)["crossfit_var"] == 0.0
    q = stats.t.ppf(0.975, r["df"])
    assert r["upper"] - r["lower"] == pytest.approx(2 * q * r["se"])


def test_crossfit_mean_with_folds_of_one_site():
    """Multisite trials of fewer than 10 sites have folds of one site. With one site per fold and
    equal sizes the working-model fold variances equal the between-fold variance: no correction.
    A 7-site trial runs the whole validation with finite policy-value intervals."""
    from clusterhte.simulate import otr_designs

    rng = np.random.default_rng(2)
    cl = np.repeat(np.arange(6), 8)
    x = rng.normal(size=cl.size) + rng.normal(size=6)[cl]
    r = V.crossfit_mean(x, cl, cl.copy())
    assert r["crossfit_var"] == pytest.approx(0.0, abs=1e-12)
    mixed = V.crossfit_mean(x, cl, np.array([0, 0, 1, 1, 2, 3])[cl])
    assert np.isfinite(mixed["se"]) and mixed["se"] >= np.sqrt(cr2_ols(x, np.ones((x.size, 1)), cl).vcov[0, 0])
    df = otr_designs.simulate_replicate("d1", 7, 40, np.random.default_rng(5))
    tr = otr_designs.trial_from_replicate(df, "train")
    oof = V.cross_fit(tr, "q-base", {}, 3, log=_io.StringIO())
    site_fold = oof["fold"].to_numpy()[np.unique(tr.cluster_codes, return_index=True)[1]]
    assert np.bincount(site_fold).min() == 1                # some folds hold a single site
    T = V.assess(tr, {"q-base": oof}, 3, n_boot=20)
    pv = T["policy_value"].set_index("method")
    assert np.isfinite(pv[["lower", "upper", "gain_vs_all_lower", "gain_vs_all_upper"]].to_numpy()).all()


def test_within_fold_rank_ranks_each_fold_on_its_own():
    tau = np.array([5.0, 1.0, 3.0, 100.0, 200.0, 150.0, 7.0, 7.0])
    fold = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    np.testing.assert_allclose(V.within_fold_rank(tau, fold),
                               [2.5 / 3, 0.5 / 3, 1.5 / 3, 0.5 / 3, 2.5 / 3, 1.5 / 3, 0.5, 0.5])
    # a fold's level no longer matters: shifting one fold's predictions changes nothing
    rng = np.random.default_rng(0)
    cl = np.repeat(np.arange(20), 10)
    f = np.array([0, 1] * 10)[cl]
    gam, t = rng.normal(size=200), rng.normal(size=200)
    a = (np.arange(20) % 4 < 2).astype(float)[cl]
    g1 = V.gates(gam, t, cl, fold=f)
    g2 = V.gates(gam, t + 10.0 * (f == 1), cl, fold=f)
    pd.testing.assert_frame_equal(g1.drop(columns="tau_mean"), g2.drop(columns="tau_mean"))
    r1, _ = V.rate(gam, t, cl, a, np.random.default_rng(1), n_boot=50, fold=f)
    r2, _ = V.rate(gam, t + 10.0 * (f == 1), cl, a, np.random.default_rng(1), n_boot=50, fold=f)
    pd.testing.assert_frame_equal(r1, r2)


def test_gates_crossfit_term_skips_a_fold_that_predicts_one_effect():
    """A fold whose CATEs are all equal sits in the middle GATES group; the cross-fitting term
    then comes from the other folds (here their top-minus-bottom estimates agree exactly, so the
    term is (1 - sum w^2 / (sum w)^2) times their mean variance) instead of being dropped."""
    rng = np.random.default_rng(8)
    cl = np.repeat(np.arange(40), 10)
    fold = (np.arange(40) % 4)[cl]
    tau = np.where(fold == 0, 1.0, rng.normal(size=cl.size))
    g = np.floor(V.within_fold_rank(tau, fold) * 5).astype(int)
    assert set(g[fold == 0]) == {2} and all(set(g[fold == k]) == set(range(5)) for k in (1, 2, 3))
    gam = rng.normal(size=cl.size)
    for k in (1, 2, 3):                                  # equal group means in folds 1-3
        for grp in range(5):
            m = (fold == k) & (g == grp)
            gam[m] += -gam[m].mean() + grp
    D = (g[:, None] == np.arange(5)[None, :]).astype(float)
    out = V.gates(gam, tau, cl, fold=fold).set_index("group").loc["top_minus_bottom"]
    c = np.zeros(5)
    c[-1], c[0] = 1.0, -1.0
    pooled = cr2_ols(gam, D, cl)
    v = [c @ cr2_ols(gam[fold == k], D[fold == k], cl[fold == k]).vcov @ c for k in (1, 2, 3)]
    term = (1 - 3 * (1 / 3) ** 2) * np.mean(v)
    assert out["se"] ** 2 == pytest.approx(c @ pooled.vcov @ c + term)


def test_validation_intervals_cover_under_no_heterogeneity():
    """Known answer: with no effect the gain of any regime over treat-all, the GATES
    top-minus-bottom difference and the AUTOC are all 0. 200 simulated CRTs (30 clusters of 20),
    the linear LMM (``spline_knots = 0``, the form these numbers were measured with) cross-fitted
    over 5 cluster folds. Measured with the same seeds (``python`` loop over
    ``V.assess``), before -> now:

    - gain over treat-all: covered 0 in 92.0% -> 96.0% (the CR2 interval treated the fold
      regimes as fixed: SE 0.111 against an SD of 0.144);
    - GATES top minus bottom: mean -0.454 -> -0.005, covered 0 in 72.5% -> 92.5% (groups were
      formed across folds, and a fold's prediction level is high when its outcomes are low
      relative to the rest of the trial);
    - AUTOC: mean -0.136 -> 0.014, covered 0 in 70.5% -> 93.0%.
    """
    gain, gates_, autoc = [], [], []
    for r in range(200):
        tr, _ = make_crt(5000 + r, "constant", ate=0.0)
        oof = V.cross_fit(tr, "lmm", {"spline_knots": 0}, 5000 + r, log=_io.StringIO())
        fold = oof["fold"].to_numpy()
        T = V.assess(tr, {"lmm": oof}, 5000 + r, n_boot=200)
        pv = T["policy_value"].set_index("method").loc["lmm"]
        sc = V.dr_scores(tr, fold)
        d = oof["decision"].to_numpy(dtype=float)
        g = V.crossfit_mean((d - 1) * sc["gamma"].to_numpy(), tr.cluster, fold)  # the gain's score
        assert g["estimate"] == pytest.approx(pv["gain_vs_all"])
        assert g["upper"] == pytest.approx(pv["gain_vs_all_upper"])
        gain.append((g["estimate"], g["se"], g["lower"] <= 0 <= g["upper"]))
        tb = T["gates"].set_index("group").loc["top_minus_bottom"]
        gates_.append((tb["estimate"], tb["lower"] <= 0 <= tb["upper"]))
        au = T["rate"].set_index("target").loc["AUTOC"]
        autoc.append((au["estimate"], au["lower"] <= 0 <= au["upper"]))
    gain, gates_, autoc = (np.array(x, dtype=float) for x in (gain, gates_, autoc))
    print(f"no effect, 200 trials: gain covers 0 {gain[:, 2].mean():.3f} (mean SE {gain[:, 1].mean():.3f}, "
          f"SD {gain[:, 0].std():.3f}); GATES top-bottom mean {gates_[:, 0].mean():.3f}, covers "
          f"{gates_[:, 1].mean():.3f}; AUTOC mean {autoc[:, 0].mean():.3f}, covers {autoc[:, 1].mean():.3f}")
    assert gain[:, 2].mean() >= 0.935
    assert gain[:, 1].mean() >= 0.95 * gain[:, 0].std()
    assert abs(gates_[:, 0].mean()) < 2.5 * gates_[:, 0].std() / np.sqrt(200)
    assert gates_[:, 1].mean() >= 0.90
    assert abs(autoc[:, 0].mean()) < 2.5 * autoc[:, 0].std() / np.sqrt(200)
    assert autoc[:, 1].mean() >= 0.90


def _replicate(seed, tau, method, ate=0.0):
    tr, _ = make_crt(seed, tau, ate=ate)
    oof = V.cross_fit(tr, method, QUICK.get(method, {}), seed, log=_io.StringIO())
    sc = V.dr_scores(tr, oof["fold"].to_numpy())
    cal = V.calibration(sc["gamma"], oof["cate"], tr.cluster, fold=oof["fold"]).set_index("term")
    pv = V.policy_value(sc, {method: oof["decision"]}, tr.cluster, fold=oof["fold"]).set_index("method")
    within = pv.loc["treat all", "lower"] <= pv.loc[method, "value"] <= pv.loc["treat all", "upper"]
    gain_covers = pv.loc[method, "gain_vs_all_lower"] <= 0 <= pv.loc[method, "gain_vs_all_upper"]
    return cal.loc["differential", "p_value"], within, gain_covers


def _rates(method, tau, reps, start):
    res = np.array([_replicate(start + r, tau, method) for r in range(reps)], dtype=float)
    p = res[:, 0]
    return float(np.mean(p < 0.05)), float(res[:, 1].mean()), float(res[:, 2].mean())


def test_null_and_strong_heterogeneity_lmm_small():
    """CI version: 20 null replicates (reject <= 4, i.e. P(X >= 5) < 2% under alpha = 0.05) and
    8 replicates with tau = X1 (reject >= 7)."""
    rej, within, covers = _rates("lmm", "constant", 20, 1000)
    print(f"lmm tau=0: rejection {rej:.3f}, value within treat-all interval {within:.3f}, "
          f"gain interval covers 0 {covers:.3f}")
    assert rej <= 0.20 and within >= 0.9
    rej1, _, _ = _rates("lmm", "linear", 8, 2000)
    print(f"lmm tau=X1: rejection {rej1:.3f}")
    assert rej1 >= 7 / 8


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lmm", "gpboost"])
def test_null_and_strong_heterogeneity_slow(method):
    """>= 100 replicates (issue 13 acceptance): null rejection <= 10%, strong >= 80%; under the
    null each regime's policy value lies within the treat-all interval in >= 90% of replicates.

    Printed, not asserted: how often the gain-vs-treat-all interval covers 0 under the null (with
    Imai & Li's cross-fitting variance; ``test_validation_intervals_cover_under_no_heterogeneity``
    asserts it for the LMM)."""
    rej, within, covers = _rates(method, "constant", 100, 5000)
    rej1, _, _ = _rates(method, "linear", 100, 7000)
    print(f"{method}: tau=0 rejection {rej:.3f} (100 reps), policy value within treat-all interval "
          f"{within:.3f}, gain-vs-all interval covers 0 {covers:.3f}; tau=X1 rejection {rej1:.3f}")
    assert rej <= 0.10
    assert rej1 >= 0.80
    assert within >= 0.90


@pytest.mark.slow
def test_doubly_robust_ate_covers_on_every_battery_scenario():
    """The blp table's intercept (the doubly robust ATE: cross-fitted linear outcome models per
    arm, CR2 errors, Satterthwaite df) covers the trial's ATE on every battery scenario, 200
    simulated trials each (Monte-Carlo SE of a 0.95 coverage: 0.015). It does not depend on the
    CATE method, so it is the ATE interval to read beside a method's own (README, battery)."""
    from clusterhte import seeds
    from clusterhte.simulate.battery import SCENARIOS, simulate

    for sc in SCENARIOS:
        cov, err, se = [], [], []
        for r in range(200):
            trial, tau = simulate(sc, seeds.rng(20231, "battery", sc, r))
            scores = V.dr_scores(trial, V.validation_folds(trial, r, 5))
            cols = list(trial.individual_covariates) + list(trial.cluster_covariates)
            b = V.best_linear_projection(scores["gamma"].to_numpy(), pd.DataFrame(trial.X(), columns=cols),
                                         cols, trial.cluster).iloc[0]
            cov.append(b.lower <= tau.mean() <= b.upper)
            err.append(b.estimate - tau.mean())
            se.append(b.se)
        print(f"{sc}: DR ATE coverage {np.mean(cov):.3f}, error mean {np.mean(err):+.3f} SD "
              f"{np.std(err):.3f}, mean SE {np.mean(se):.3f}")
        assert np.mean(cov) >= 0.88, sc
        assert abs(np.mean(err)) < 0.05, sc


# ------------------------------------------------------------------------------ worked example + CLI
ARGS = ["--data", str(EXAMPLE), "--design", "crt", "--outcome", "y", "--treatment", "arm", "--cluster",
        "site", "--covariates", "age,female,score", "--cluster-covariates", "urban"]


def _cli(*args):
    exe = str(Path(sys.executable).with_name("clusterhte"))
    return subprocess.run([exe, "validate", *ARGS, *args], capture_output=True, text=True, timeout=300)


def test_cli_validate_worked_example(tmp_path):
    out = tmp_path / "v"
    r = _cli("--methods", "lmm,gamm", "--boot", "50", "--out", str(out))
    assert r.returncode == 0, r.stderr
    cal = pd.read_csv(out / "calibration.csv")
    assert list(cal.columns[:6]) == ["method", "term", "estimate", "se", "df", "p_value"]
    assert list(pd.read_csv(out / "model_selection.csv").columns[:6]) == ["method", "loss", "value",
                                                                          "difference", "lower", "upper"]
    pv = pd.read_csv(out / "policy_value.csv")
    assert ["method", "value"] == list(pv.columns[:2]) and {"lower", "upper"} <= set(pv.columns)
    for t in V.VALIDATION_TABLES:
        assert (out / f"{t}.csv").exists()
    # the example's tau = 1 + 0.8 score - 0.5 urban is found by both methods
    assert cal.query("term == 'differential'")["p_value"].max() < 0.01
    blp = pd.read_csv(out / "blp.csv").set_index("term")
    assert blp.loc["score", "lower"] > 0
    # the new BLP intercept interval is an honest ATE interval: the mean DR score (covariates are
    # centred) with a CR2 t interval, with a real width, unlike the old regression of estimated
    # CATEs ([1.14175, 1.14175]); its width is within 20% of the LMM's ATE interval (Kenward-Roger
    # t interval): measured 1.385 against 1.159 (ratio 1.195).
    from clusterhte.data.user import load_trial
    from clusterhte.stages import apply
    tr = load_trial(EXAMPLE, "crt", outcome="y", treatment="arm", cluster="site",
                    individual_covariates=["age", "female", "score"], cluster_covariates=["urban"])
    fits, _, _ = apply.fit(tr, "lmm", {}, 20231, log=_io.StringIO())
    ate_w = fits["ate_upper"].iloc[0] - fits["ate_lower"].iloc[0]
    w = blp.loc["intercept", "upper"] - blp.loc["intercept", "lower"]
    print(f"BLP intercept interval width {w:.4f}, LMM ATE interval width {ate_w:.4f}, ratio {w / ate_w:.3f}")
    assert blp.loc["intercept", "lower"] < fits["ate"].iloc[0] < blp.loc["intercept", "upper"]
    assert abs(w / ate_w - 1) <= 0.2
    oof = pd.read_csv(out / "oof_cates.csv").query("method == 'lmm'")
    gam = V.dr_scores(tr, oof["fold"].to_numpy())["gamma"].to_numpy()
    est, se, df, lo, hi = cr2_ols(gam, np.ones((tr.n, 1)), tr.cluster).interval([1.0])
    assert blp.loc["intercept", "estimate"] == pytest.approx(est)
    # the covariates (centred) leave the estimate and only take variance out of the interval
    assert 0.5 * ate_w < w < hi - lo


def test_cli_validate_bad_input_one_line(tmp_path, capsys):
    from clusterhte.cli import main

    def run(*extra):
        code = main(["validate", *ARGS, *extra])
        return code, capsys.readouterr().err

    code, err = run("--methods", "lmm", "--covariates", "age,nope", "--out", str(tmp_path / "x"))
    assert code == 2 and err.count("\n") == 1 and "['nope'] not found" in err
    code, err = run("--methods", "q-rs", "--out", str(tmp_path / "x"))
    assert code == 2 and "is for multisite trials" in err and err.count("\n") == 1
    code, err = run("--methods", "lmm", "--param", "nonsense=1", "--out", str(tmp_path / "x"))
    assert code == 2 and "nonsense" in err and err.count("\n") == 1
    code, err = run("--methods", "lmm", "--folds", "1", "--out", str(tmp_path / "x"))
    assert code == 2 and "--folds" in err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ workflow target
def test_workflow_validation_tables_and_figures(tmp_path):
    """The trial sheet's worked example (LMM and GAMM only): the validation tables, the new DR
    BLP and the figures come out of the workflow with the CLI's column names and numbers."""
    from workflow_utils import snakemake, workdir

    wd = workdir(tmp_path / "wf", {"seed": 20231, "reps_per_chunk": 20,
                                   "trials": {"sheet": "sheet.tsv", "method_overrides": {}}})
    sheet = (ROOT / "config" / "trials.tsv").read_text().replace("lmm,gamm,cf,ribart", "lmm,gamm")
    (wd / "sheet.tsv").write_text(sheet)
    targets = [f"results/tables/example_crt/{t}.parquet" for t in ("calibration", "model_selection",
                                                                "policy_value", "blp", "verdict")]
    targets += ["results/figures/example_crt/validation_calibration.png",
                "results/figures/example_crt/validation_loss.pdf"]
    r = snakemake(wd, *targets, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    cal = pd.read_csv(wd / "results/tables/example_crt/calibration.csv")
    assert list(cal.columns[:6]) == ["method", "term", "estimate", "se", "df", "p_value"]
    assert set(cal["method"]) == {"lmm", "gamm"}
    # same numbers as `clusterhte validate` (same seed, folds and bootstrap streams)
    cli = tmp_path / "cli"
    assert _cli("--methods", "lmm,gamm", "--out", str(cli)).returncode == 0
    pd.testing.assert_frame_equal(cal, pd.read_csv(cli / "calibration.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(wd / "results/tables/example_crt/blp.csv"),
                                  pd.read_csv(cli / "blp.csv"))
    assert (wd / "results/figures/example_crt/validation_calibration.png").stat().st_size > 10_000
