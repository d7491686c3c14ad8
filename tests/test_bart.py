"""Tests of the random-intercept BART S-learners (riBART, mixedBART, stan4bart) on stochtree."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import invgamma

from clusterhte import methods
from clusterhte.data.trial import TrialData
from clusterhte.methods.base import MethodError

from conftest import lmm_ate, make_crt

NAMES = ["ribart", "mixedbart", "stan4bart"]
QUICK = dict(num_burnin=50, num_mcmc=50, num_chains=1, keep_every=1)
# longer chains (two of them) for the checks of the average effect
MEDIUM = dict(num_burnin=200, num_mcmc=300, num_chains=2, keep_every=1)

_FITS: dict = {}


def fitted(name: str, trial: TrialData, settings: dict, seed: int = 0):
    """Fit once per (method, trial, settings, seed) and reuse across tests."""
    key = (name, trial.name, id(trial), tuple(sorted(settings.items())), seed)
    if key not in _FITS:
        est = methods.make(name, settings, random_state=seed).fit(trial)
        _FITS[key] = (est, est.predict(trial))
    return _FITS[key]


# ------------------------------------------------------------------ interface and defaults
@pytest.mark.parametrize("name", NAMES)
def test_registry_interface(name):
    cls = methods.get(name)
    assert cls.name == name and cls.designs == ("crt",) and cls.has_intervals
    assert cls.library == "stochtree"
    d = cls.default_params()
    for v in d.values():
        assert v is None or isinstance(v, (int, float, str, bool, list))
    est = cls(**d)
    assert est.get_params() == d
    assert d["num_gfr"] == 0 and d["n_threads"] == 1


def test_defaults_follow_r_originals():
    ri = methods.get("ribart").default_params()
    assert (ri["num_trees"], ri["k"], ri["beta"], ri["alpha"]) == (75, 2.0, 2.0, 0.95)
    assert (ri["num_chains"], ri["keep_every"], ri["num_burnin"], ri["num_mcmc"]) == (4, 5, 1500, 1500)
    mx = methods.get("mixedbart").default_params()
    assert (mx["num_trees"], mx["num_burnin"], mx["num_mcmc"], mx["num_chains"]) == (200, 100, 1000, 1)
    assert (mx["sigdf"], mx["sigquant"]) == (3.0, 0.9)
    s4 = methods.get("stan4bart").default_params()
    assert (s4["num_trees"], s4["num_chains"], s4["num_burnin"], s4["num_mcmc"]) == (75, 4, 1000, 1000)


# ------------------------------------------------------------------ acceptance tests
@pytest.mark.parametrize("name", NAMES)
def test_linear_modifier_recovered(name, crt_linear):
    trial, tau = crt_linear
    _, res = fitted(name, trial, QUICK)
    assert np.all(np.isfinite(res.point)) and np.all(np.isfinite(res.draws))
    assert np.corrcoef(res.point, tau)[0, 1] >= 0.8


@pytest.mark.parametrize("name", NAMES)
def test_constant_effect_not_absorbed_by_random_intercept(name, crt_constant):
    """True effect 1.0 for everyone; the cluster intercept must not soak up the cluster-level effect.

    Reference: the correctly specified random-intercept LMM (statsmodels). On this fixture the
    clusters drawn into the treated arm happen to have low intercepts, and the LMM itself estimates
    0.60 (SE 0.24); an estimator free of absorption bias tracks the LMM, one with absorption falls
    well below it (towards 0).
    """
    trial, tau = crt_constant
    est, res = fitted(name, trial, MEDIUM)
    mean, lo, hi = res.ate()
    ref, se, re_var = lmm_ate(trial)
    # the posterior ATE interval is about as wide as the LMM Wald interval and contains its estimate
    assert lo <= ref <= hi
    assert 0.5 < (hi - lo) / (2 * 1.96 * se) < 2.0
    assert abs(mean - ref) < 0.25
    # the random-intercept variance is learned, neither 0 nor inflated by the treatment effect
    assert 0.5 * re_var < res.info["rfx_variance_posterior_mean"] < 2.0 * re_var


@pytest.mark.parametrize("name", NAMES)
def test_constant_effect_recovered_across_replicates(name):
    """Mean CATE within 0.3 of the true 1.0, averaged over 5 fresh CRTs (30 x 20, ICC 0.2)."""
    means = [methods.make(name, QUICK, random_state=r).fit(make_crt(200 + r, "constant")[0])
             .predict(make_crt(200 + r, "constant")[0]).point.mean() for r in range(5)]
    assert abs(np.mean(means) - 1.0) < 0.3, means


# ------------------------------------------------------------------ prediction contract
@pytest.mark.parametrize("name", NAMES)
def test_cate_ignores_cluster_labels_treatment_and_outcome(name, crt_linear):
    trial, _ = crt_linear
    est, res = fitted(name, trial, QUICK)
    f = trial.frame.copy()
    f["cluster"] = f["cluster"] + 1000          # clusters never seen in training
    f["treatment"] = 1.0 - f["treatment"]
    f["outcome"] = np.nan
    new = replace(trial, frame=f, name="new-clusters")
    res_new = est.predict(new)
    np.testing.assert_array_equal(res_new.draws, res.draws)
    # a subset of rows gives the same per-row CATEs (no leakage across rows)
    sub = est.predict(trial.subset(np.arange(0, trial.n, 7)))
    np.testing.assert_array_equal(sub.point, res.point[::7])


@pytest.mark.parametrize("name", NAMES)
def test_posterior_intervals(name, crt_linear):
    trial, _ = crt_linear
    _, res = fitted(name, trial, QUICK)
    assert res.draws.shape == (trial.n, QUICK["num_mcmc"] * QUICK["num_chains"])
    np.testing.assert_allclose(res.point, res.draws.mean(axis=1))
    assert np.all(res.lower <= res.point) and np.all(res.point <= res.upper)
    assert np.all(res.lower < res.upper)
    np.testing.assert_allclose(res.lower, np.quantile(res.draws, 0.025, axis=1))
    m, lo, hi = res.ate()
    assert lo < m < hi


def test_chains_and_thinning_give_the_draw_count(crt_linear):
    trial, _ = crt_linear
    s = dict(num_burnin=10, num_mcmc=15, num_chains=3, keep_every=2, num_trees=20)
    _, res = fitted("ribart", trial, s)
    assert res.draws.shape == (trial.n, 45)
    s_gfr = dict(num_burnin=0, num_mcmc=20, num_chains=2, num_gfr=4, num_trees=20)
    _, res_gfr = fitted("stan4bart", trial, s_gfr)
    assert res_gfr.draws.shape == (trial.n, 40)


@pytest.mark.parametrize("name", ["ribart", "mixedbart"])
def test_reproducible_with_random_state(name, crt_linear):
    trial, _ = crt_linear
    s = dict(QUICK, num_trees=30)
    a = methods.make(name, s, random_state=7).fit(trial).predict(trial)
    b = methods.make(name, s, random_state=7).fit(trial).predict(trial)
    c = methods.make(name, s, random_state=8).fit(trial).predict(trial)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert not np.array_equal(a.draws, c.draws)


# ------------------------------------------------------------------ priors mapped from dbarts / BART
def test_leaf_prior_matches_dbarts_k(crt_linear):
    trial, _ = crt_linear
    est, _ = fitted("ribart", trial, QUICK)
    y = trial.outcome
    m = est.num_trees
    expected = ((y.max() - y.min()) / (2 * est.k)) ** 2 / m       # BART: sd_mu = range / (2 k sqrt(m))
    assert est.sigma2_leaf_ == pytest.approx(expected, rel=1e-12)


def test_sigma_prior_matches_bart_sigquant():
    """IG(nu/2, nu*lambda/2) puts probability sigquant below sigest^2 (BART's calibration)."""
    from clusterhte.methods.bart import sigma_prior

    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, -0.5, 0.2]) + rng.normal(0, 0.7, 200)
    Z = np.column_stack([np.ones(200), X])
    resid = y - Z @ np.linalg.lstsq(Z, y, rcond=None)[0]
    sigest2 = resid @ resid / (200 - 4) / np.var(y)
    for nu, q in [(3.0, 0.9), (10.0, 0.75)]:
        shape, scale = sigma_prior(y, X, nu, q)
        assert shape == nu / 2
        assert invgamma.cdf(sigest2, shape, scale=scale) == pytest.approx(q, rel=1e-10)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("param, value, word", [
    ("num_trees", 0, "num_trees"), ("alpha", 1.5, "alpha"), ("k", -1.0, "'k'"),
    ("num_mcmc", 1, "num_mcmc"), ("sigquant", 1.0, "sigquant"), ("num_trees", 2.5, "num_trees"),
])
def test_bad_hyperparameters_are_named(param, value, word, crt_linear):
    trial, _ = crt_linear
    with pytest.raises(MethodError, match=word):
        methods.get("ribart")(**{param: value}).fit(trial)


def test_gfr_needs_one_ensemble_per_chain(crt_linear):
    trial, _ = crt_linear
    with pytest.raises(MethodError, match="num_gfr"):
        methods.get("stan4bart")(num_gfr=2, num_chains=4).fit(trial)


def test_make_rejects_unknown_or_mistyped_hyperparameters():
    with pytest.raises(MethodError, match="ntree"):
        methods.make("mixedbart", {"ntree": 50})
    with pytest.raises(MethodError, match="num_trees"):
        methods.make("mixedbart", {"num_trees": "many"})


def test_wrong_design_and_missing_column(crt_linear):
    trial, _ = crt_linear
    ms = replace(trial, design="multisite")
    with pytest.raises(MethodError, match="crt"):
        methods.get("ribart")(**QUICK).fit(ms)
    est, _ = fitted("ribart", trial, QUICK)
    with pytest.raises(MethodError, match="V1"):
        est.predict(replace(trial, frame=trial.frame.drop(columns="V1")))
    f = trial.frame.copy()
    f.loc[3, "X2"] = np.nan
    with pytest.raises(MethodError, match="X2"):
        est.predict(replace(trial, frame=f))
    with pytest.raises(MethodError, match="fit"):
        methods.get("ribart")().predict(trial)


# ------------------------------------------------------------------ paper-scale check
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_interval_coverage_over_replicates(name):
    """95% intervals cover the true CATE in 85-100% of rows, averaged over 20 replicates."""
    settings = dict(num_burnin=500, num_mcmc=500, num_chains=1, keep_every=1)
    cover = []
    for rep in range(20):
        trial, tau = make_crt(1000 + rep, "linear")
        res = methods.make(name, settings, random_state=rep).fit(trial).predict(trial)
        cover.append(np.mean((res.lower <= tau) & (tau <= res.upper)))
    print(f"\n{name}: mean row coverage of the 95% intervals over 20 replicates {np.mean(cover):.3f}")
    assert 0.85 <= np.mean(cover) <= 1.0, np.mean(cover)


def test_outcome_predictions_and_posterior_predictive(crt_constant):
    """The random intercept switched on and off: the conditional-minus-marginal cluster effects
    track the LMM's BLUPs, and the posterior predictive replicates reproduce the outcome's spread."""
    from clusterhte.evaluate.summaries import posterior_predictive_check
    from clusterhte.methods.lmm import LMM

    td, _ = crt_constant
    from clusterhte.methods.bart import RiBART

    est = RiBART(num_burnin=100, num_mcmc=100, num_chains=1, keep_every=1, random_state=3).fit(td)
    o = est.predict_outcome(td, n_replicates=80)
    assert o.replicates.shape == (80, td.n)
    codes = td.cluster_codes
    eff = np.bincount(codes, weights=o.conditional - o.marginal) / np.bincount(codes)
    lmm = LMM().fit(td)
    blup = lmm.result_.blups[:, 0]
    assert np.corrcoef(eff, blup)[0, 1] > 0.8
    ppc = posterior_predictive_check(td.outcome, o.replicates, td.cluster).set_index("statistic")
    assert 0.02 < ppc.loc["sd", "p_value"] < 0.98
