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
    # dbarts: n.burn = n.samples = 1500 sweeps, n.thin = 5 -> 300 kept draws per chain, 4 chains
    assert (ri["num_chains"], ri["keep_every"], ri["num_burnin"], ri["num_mcmc"]) == (4, 5, 1500, 300)
    assert ri["rfx_sd_prior_scale"] == 2.5                      # dcauchy(x, 0, rel.scale * 2.5)
    mx = methods.get("mixedbart").default_params()
    assert (mx["num_trees"], mx["num_burnin"], mx["num_mcmc"], mx["num_chains"]) == (200, 100, 1000, 1)
    assert (mx["sigdf"], mx["sigquant"]) == (3.0, 0.9)
    assert (mx["rfx_prior"], mx["rfx_prior_df"], mx["rfx_prior_scale"]) == ("hiw", 3.0, None)
    s4 = methods.get("stan4bart").default_params()
    assert (s4["num_trees"], s4["num_chains"], s4["num_burnin"], s4["num_mcmc"]) == (75, 4, 1000, 1000)
    assert (s4["decov_shape"], s4["decov_scale"], s4["sigma_prior_rate"]) == (1.0, 1.0, 1.0)


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
    # mixedBART's 200 trees cost 2.7 times riBART's 75 here; 100 trees keep the test short
    est, res = fitted(name, trial, dict(MEDIUM, num_trees=100) if name == "mixedbart" else MEDIUM)
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
    s_gfr = dict(num_burnin=0, num_mcmc=20, num_chains=2, num_gfr=3, num_trees=20)
    est, res_gfr = fitted("stan4bart", trial, s_gfr)
    assert res_gfr.draws.shape == (trial.n, 40)
    assert est.chain_ate_draws(trial).shape == (2, 20)
    np.testing.assert_allclose(est.chain_ate_draws(trial).ravel(), res_gfr.draws.mean(axis=0))


@pytest.mark.parametrize("name", NAMES)
def test_cate_draws_from_treatment_trees_equal_whole_forest_contrasts(name, crt_linear):
    """The CATE draws are computed from the trees that split on the treatment only; they equal the
    contrast of the whole forests f(x, 1) - f(x, 0) (every tree predicted for both arms) up to
    rounding, for two chains and for new rows."""
    td, _ = crt_linear
    est, _ = fitted(name, td, dict(QUICK, num_chains=2))
    new = replace(td, frame=td.frame.assign(X1=td.frame["X1"] * 1.3 - 0.2), name="shifted rows")
    for d in (td, new):
        X1 = est._design(d, np.ones(d.n))
        X0 = X1.copy()
        X0[:, -1] = 0.0
        f = est._forest_draws(np.vstack([X1, X0]))
        full = f[:d.n] - f[d.n:]
        draws = est.cate_draws(d)
        assert draws.shape == full.shape == (d.n, 100)
        np.testing.assert_allclose(draws, full, rtol=0, atol=1e-12)
    n_draws, trees = est._treatment_trees()
    assert n_draws == 100 and 0 < trees[0].size < 100 * est.num_trees  # only some trees split on A
    assert set(np.unique(trees[0])) > set(range(50))                   # trees of both chains
    assert np.any(np.abs(full) > 0.1)


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
@pytest.mark.parametrize("name, param, value, word", [
    ("ribart", "num_trees", 0, "num_trees"), ("ribart", "alpha", 1.5, "alpha"), ("ribart", "k", -1.0, "'k'"),
    ("ribart", "num_mcmc", 1, "num_mcmc"), ("ribart", "sigquant", 1.0, "sigquant"),
    ("ribart", "num_trees", 2.5, "num_trees"), ("ribart", "rfx_sd_prior_scale", float("nan"), "rfx_sd_prior_scale"),
    ("ribart", "rfx_sd_prior_scale", 0.0, "rfx_sd_prior_scale"),
    ("mixedbart", "rfx_prior", "wishart", "rfx_prior"), ("mixedbart", "rfx_prior_df", -1.0, "rfx_prior_df"),
    ("mixedbart", "rfx_prior_scale", float("inf"), "rfx_prior_scale"),
    ("stan4bart", "decov_shape", 0.0, "decov_shape"), ("stan4bart", "decov_scale", float("nan"), "decov_scale"),
    ("stan4bart", "sigma_prior_rate", -2.0, "sigma_prior_rate"), ("stan4bart", "n_threads", 0, "n_threads"),
])
def test_bad_hyperparameters_are_named(name, param, value, word, crt_linear):
    trial, _ = crt_linear
    with pytest.raises(MethodError, match=word):
        methods.get(name)(**{**QUICK, param: value}).fit(trial)


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


# ------------------------------------------------------------------ the random-intercept priors
# Each update below is run on K independent chains, started away from the target; after `STEPS`
# updates the K states are draws from the update's stationary law, which a KS test compares with
# the stated density. With no data (J = 0 intercepts, ssq = 0) the stationary law is the prior.
K, STEPS = 800, 25


def _chains(update, init, seed):
    """K independent chains of ``update(state, rng) -> state``, each run for STEPS updates."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(K):
        x = init
        for _ in range(STEPS):
            x = update(x, rng)
        out.append(x)
    return np.array(out)


def _ks(draws, cdf):
    from scipy.stats import kstest

    return kstest(draws, cdf).pvalue


def _grid_cdf(logpdf, lo, hi, n=20001):
    """CDF of an unnormalised density on a log-spaced grid (trapezoid rule)."""
    x = np.exp(np.linspace(np.log(lo), np.log(hi), n))
    lp = logpdf(x)
    w = np.exp(lp - lp.max())
    c = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(x))])
    return lambda q: np.interp(q, x, c / c[-1])


def test_ribart_prior_only_draws_are_half_cauchy():
    """dbarts' default: s_b ~ half-Cauchy(0, 2.5 sd(y)); the slice update with no data keeps it."""
    from scipy.stats import halfcauchy

    from clusterhte.methods.bart import halfcauchy_sd_step

    A = 2.5
    s = _chains(lambda x, rng: halfcauchy_sd_step(x, 0.0, 0, A, rng), 0.2, 1)   # dbarts' start: rel.scale / 5
    assert _ks(s, halfcauchy(scale=A).cdf) > 1e-3
    assert _ks(s, halfcauchy(scale=1.5 * A).cdf) < 1e-6    # the test can tell the scale apart


def test_ribart_conditional_update_matches_the_analytic_posterior():
    """Given J = 8 intercepts with sum of squares 2.4: p(s | b) propto s^-J exp(-ssq / 2 s^2) / (1 + (s/A)^2)."""
    from clusterhte.methods.bart import halfcauchy_sd_step

    J, ssq, A = 8, 2.4, 2.5
    s = _chains(lambda x, rng: halfcauchy_sd_step(x, ssq, J, A, rng), 3.0, 2)
    cdf = _grid_cdf(lambda x: -J * np.log(x) - ssq / (2 * x ** 2) - np.log1p((x / A) ** 2), 1e-3, 1e3)
    assert _ks(s, cdf) > 1e-3
    # a different prior (p(s) propto s^-3) gives a different posterior, which the test rejects
    assert _ks(s, _grid_cdf(lambda x: -(J + 3) * np.log(x) - ssq / (2 * x ** 2), 1e-3, 1e3)) < 1e-6


def test_mixedbart_prior_only_draws_are_half_t():
    """mxBART prior = 1 (hierarchical inverse-Wishart, df = 3): the margin of s_b is half-t_3(0, A)."""
    from scipy.stats import halfcauchy, t as student_t

    from clusterhte.methods.bart import hiw_variance_step

    df, A = 3.0, 0.4
    s2 = _chains(lambda x, rng: hiw_variance_step(x, 0.0, 0, df, A, rng), 1.0, 3)   # mxBART's start: 1
    half_t = lambda x: 2 * student_t.cdf(np.asarray(x) / A, df) - 1
    assert _ks(np.sqrt(s2), half_t) > 1e-3
    assert _ks(np.sqrt(s2), halfcauchy(scale=A).cdf) < 1e-6          # df = 1 would be different


def test_mixedbart_conditional_update_matches_the_analytic_posterior():
    from scipy.stats import t as student_t

    from clusterhte.methods.bart import hiw_variance_step

    J, ssq, df, A = 6, 0.9, 3.0, 0.4
    s2 = _chains(lambda x, rng: hiw_variance_step(x, ssq, J, df, A, rng), 2.0, 4)
    cdf = _grid_cdf(lambda x: -J * np.log(x) - ssq / (2 * x ** 2) + student_t.logpdf(x / A, df), 1e-3, 1e3)
    assert _ks(np.sqrt(s2), cdf) > 1e-3


def test_mixedbart_iw_option_is_scaled_inverse_chi2():
    """mxBART prior = 2: s_b^2 ~ scaled-inv-chi^2(df, s) = IG(df / 2, df s / 2), conjugate in b."""
    from scipy.stats import invgamma

    from clusterhte.methods.bart import iw_variance_step

    rng = np.random.default_rng(5)
    df, s = 3.0, 0.2
    draws = np.array([iw_variance_step(0.0, 0, df, s, rng) for _ in range(K)])
    assert _ks(draws, invgamma(df / 2, scale=df * s / 2).cdf) > 1e-3
    post = np.array([iw_variance_step(1.7, 9, df, s, rng) for _ in range(K)])
    assert _ks(post, invgamma((df + 9) / 2, scale=(df * s + 1.7) / 2).cdf) > 1e-3


@pytest.mark.parametrize("shape, scale, rate", [(1.0, 1.0, 1.0), (2.5, 0.3, 4.0)])
def test_stan4bart_prior_only_draws_are_decov_gamma_and_exponential_sigma(shape, scale, rate):
    """rstanarm decov, one varying intercept: s_b / sigma ~ Gamma(shape, scale); sigma ~ Exp(rate)."""
    from scipy.stats import expon, gamma

    from clusterhte.methods.bart import decov_step

    ts = _chains(lambda x, rng: decov_step(*x, 0.0, 0, 0.0, 0, shape, scale, rate, rng), (5.0, 0.05), 6)
    t, sig = ts[:, 0], ts[:, 1]
    assert _ks(t, gamma(shape, scale=scale).cdf) > 1e-3
    assert _ks(sig, expon(scale=1 / rate).cdf) > 1e-3
    assert _ks(t, gamma(shape, scale=1.5 * scale).cdf) < 1e-4


def test_stan4bart_conditional_update_matches_the_analytic_posterior():
    """Joint (t, sigma) given J = 5 intercepts (ssq = 1.1) and n = 40 residuals (rss = 30): the
    t-margin of p(t, sigma) propto sigma^-(n+J) t^-J exp(-(rss + ssq/t^2)/(2 sigma^2)) Gamma(t) Exp(sigma)."""
    from scipy.stats import gamma

    from clusterhte.methods.bart import decov_step

    J, ssq, n, rss, shape, scale, rate = 5, 1.1, 40, 30.0, 1.0, 1.0, 1.0
    t = _chains(lambda x, rng: decov_step(*x, ssq, J, rss, n, shape, scale, rate, rng), (0.1, 3.0), 7)[:, 0]
    tg = np.exp(np.linspace(np.log(1e-3), np.log(50), 1500))
    sg = np.exp(np.linspace(np.log(0.05), np.log(20), 1500))
    T, S = np.meshgrid(tg, sg, indexing="ij")
    lp = (-(n + J) * np.log(S) - J * np.log(T) - (rss + ssq / T ** 2) / (2 * S ** 2)
          + gamma.logpdf(T, shape, scale=scale) - rate * S)
    w = np.exp(lp - lp.max())
    marg_t = np.log(np.trapezoid(w, sg, axis=1) + 1e-300)
    cdf = _grid_cdf(lambda x: np.interp(np.log(x), np.log(tg), marg_t), 1e-3, 50)
    assert _ks(t, cdf) > 1e-3


def test_random_intercept_reml_matches_lme4(crt_linear):
    """lme4 4.2 ``lmer(outcome ~ X1 + X2 + X3 + V1 + treatment + (1 | cluster))`` (REML) on the
    crt_linear fixture and on make_crt(5, M = 6, size = 4) (a boundary fit, variance 0)."""
    from clusterhte.methods.bart import random_intercept_reml

    small, _ = make_crt(5, "linear", M=6, size=4)
    for trial, (vb, ve) in [(crt_linear[0], (0.0729154275, 1.0629999068)), (small, (0.0, 0.7580779222))]:
        f = trial.frame
        X = f[["X1", "X2", "X3", "V1", "treatment"]].to_numpy()
        s2b, s2e = random_intercept_reml(f["outcome"].to_numpy(), X, trial.cluster_codes)
        assert s2b == pytest.approx(vb, abs=2e-7) and s2e == pytest.approx(ve, rel=2e-7)


def test_fitted_methods_carry_their_priors(crt_linear):
    """The estimator hands its R original's prior, with the data-based scales, to the sampler."""
    from scipy.stats import chi2, t as student_t

    from clusterhte.methods.bart import _Decov, _HalfCauchy, _MxBART, random_intercept_reml

    trial, _ = crt_linear
    ri, _ = fitted("ribart", trial, QUICK)
    assert isinstance(ri.prior_, _HalfCauchy) and ri.prior_.A == 2.5
    mx, _ = fitted("mixedbart", trial, QUICK)
    sd = np.std(trial.outcome)
    X = mx._design(trial, trial.treatment.astype(float))
    s2u, s2e = random_intercept_reml(trial.outcome, X, trial.cluster_codes)
    assert isinstance(mx.prior_, _MxBART) and mx.prior_.kind == "hiw" and mx.prior_.df == 3.0
    assert mx.prior_.scale == pytest.approx(np.sqrt(s2u) / sd / student_t.ppf(0.975, 3), rel=1e-10)
    assert mx.prior_.sig_scale == pytest.approx(1.5 * s2e / sd ** 2 * chi2.ppf(0.9, 3) / 3, rel=1e-10)
    iw = methods.make("mixedbart", dict(QUICK, rfx_prior="iw", num_trees=20), random_state=0).fit(trial)
    assert iw.prior_.kind == "iw"
    assert iw.prior_.scale == pytest.approx(s2u / sd ** 2 * chi2.ppf(0.95, 3) / 3, rel=1e-10)
    s4, _ = fitted("stan4bart", trial, QUICK)
    assert isinstance(s4.prior_, _Decov) and (s4.prior_.shape, s4.prior_.scale, s4.prior_.rate) == (1, 1, 1)
    # the three priors lead to three different posteriors of the random-intercept variance
    v = [m.rfx_variance_draws_.mean() for m in (ri, mx, s4)]
    assert len(set(np.round(v, 6))) == 3


def test_gibbs_sweep_recovers_cluster_intercepts_with_known_forest():
    """With the trees switched off (leaf prior variance 1e-12, so f = 0), the sampler is the
    conjugate random-intercept model: the posterior mean of each b_j is the shrunken cluster mean
    at the posterior variances (checked at their posterior means)."""
    from clusterhte.methods.bart import _MxBART, run_chain

    rng = np.random.default_rng(8)
    J, m = 12, 15
    g = np.repeat(np.arange(J), m)
    b_true = rng.normal(0, 0.8, J)
    y = b_true[g] + rng.normal(0, 0.5, J * m)
    X = rng.normal(size=(J * m, 1))
    prior = _MxBART("iw", 3.0, 0.3, 1.5, 0.1)
    out = run_chain(X, y - y.mean(), g, prior, num_trees=1, alpha=0.95, beta=2.0,
                    min_samples_leaf=5, leaf_scale=1e-12, sigma2_init=0.25, num_gfr=0,
                    num_burnin=200, num_mcmc=800, keep_every=1, n_threads=1, seed=3,
                    rng=np.random.default_rng(9))
    bhat = out["b"].mean(axis=0)
    ybar = np.bincount(g, weights=y - y.mean()) / m
    s2, e2 = out["s2b"].mean(), out["sigma2"].mean()
    shrunk = ybar * (m / e2) / (m / e2 + 1 / s2)
    np.testing.assert_allclose(bhat, shrunk, atol=0.05)
    assert 0.15 < e2 < 0.4 and 0.2 < s2 < 1.5


def test_split_rhat_and_ess_on_known_chains():
    """AR(1) chains with rho = 0.8 have ESS = N (1 - rho) / (1 + rho); shifted chains have R-hat > 1."""
    from scipy.signal import lfilter

    from clusterhte.methods.bart import split_rhat_ess

    rng = np.random.default_rng(10)
    x = lfilter([1.0], [1.0, -0.8], rng.normal(size=(4, 21000)), axis=1)[:, 1000:]
    rhat, ess = split_rhat_ess(x)
    assert rhat < 1.01
    assert ess == pytest.approx(80000 * 0.2 / 1.8, rel=0.15)
    y = rng.normal(size=(4, 500))
    assert split_rhat_ess(y)[0] < 1.02 and split_rhat_ess(y)[1] > 1000
    y[0] += 1.0
    assert split_rhat_ess(y)[0] > 1.05
