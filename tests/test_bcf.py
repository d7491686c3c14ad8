"""Tests of MBCF (stochtree BCF with a cluster random intercept)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clusterhte import methods
from clusterhte.data.trial import TrialData
from clusterhte.methods.base import MethodError

from conftest import lmm_ate, make_crt

QUICK = dict(num_burnin=50, num_mcmc=50)
MEDIUM = dict(num_burnin=250, num_mcmc=250)

_FITS: dict = {}


def fitted(trial: TrialData, settings: dict, seed: int = 0):
    key = (id(trial), tuple(sorted(settings.items())), seed)
    if key not in _FITS:
        est = methods.make("mbcf", settings, random_state=seed).fit(trial)
        _FITS[key] = (est, est.predict(trial))
    return _FITS[key]


def test_interface_and_multibart_defaults():
    cls = methods.get("mbcf")
    assert cls.name == "mbcf" and cls.label == "MBCF" and cls.designs == ("crt",)
    d = cls.default_params()
    for v in d.values():
        assert v is None or isinstance(v, (int, float, str, bool, list))
    assert cls(**d).get_params() == d
    assert (d["num_trees_control"], d["num_trees_moderate"]) == (250, 50)
    assert (d["alpha_moderate"], d["beta_moderate"]) == (0.25, 3.0)
    assert (d["num_burnin"], d["num_mcmc"], d["keep_every"], d["num_gfr"]) == (1000, 1000, 1, 0)
    assert (d["sd_control"], d["sd_moderate"]) == (2.0, 1.0)
    assert d["sample_intercept"] is False and d["n_threads"] == 1


def test_linear_modifier_recovered(crt_linear):
    trial, tau = crt_linear
    _, res = fitted(trial, QUICK)
    assert np.all(np.isfinite(res.point)) and np.all(np.isfinite(res.draws))
    assert np.corrcoef(res.point, tau)[0, 1] >= 0.8


def test_constant_effect_not_absorbed_by_random_intercept(crt_constant):
    """Reference: the correctly specified LMM, which estimates 0.60 (SE 0.24) on this fixture.

    MBCF estimates the effect directly (no S-learner split on A), so its average effect should
    track the LMM.
    """
    trial, _ = crt_constant
    _, res = fitted(trial, MEDIUM)
    mean, lo, hi = res.ate()
    ref, se, re_var = lmm_ate(trial)
    # the posterior ATE interval is about as wide as the LMM Wald interval and contains its estimate
    assert lo <= ref <= hi
    assert 0.5 < (hi - lo) / (2 * 1.96 * se) < 2.0
    assert abs(mean - ref) < 0.2
    assert 0.5 * re_var < res.info["rfx_variance_posterior_mean"] < 2.0 * re_var


def test_constant_effect_recovered_across_replicates():
    """Mean CATE within 0.3 of the true 1.0, averaged over 5 fresh CRTs (30 x 20, ICC 0.2)."""
    means = []
    for r in range(5):
        trial = make_crt(200 + r, "constant")[0]
        means.append(methods.make("mbcf", QUICK, random_state=r).fit(trial).predict(trial).point.mean())
    assert abs(np.mean(means) - 1.0) < 0.3, means


def test_cate_equals_stochtree_treatment_term_on_training_rows(crt_linear):
    """Identity: the CATE draws are BCF's cached tau(x) draws for the training rows."""
    trial, _ = crt_linear
    est, res = fitted(trial, QUICK)
    np.testing.assert_allclose(res.draws, np.asarray(est.model_.tau_hat_train).reshape(trial.n, -1),
                               rtol=1e-10, atol=1e-10)


def test_cate_ignores_cluster_labels_treatment_and_outcome(crt_linear):
    trial, _ = crt_linear
    est, res = fitted(trial, QUICK)
    f = trial.frame.copy()
    f["cluster"] = f["cluster"] + 1000
    f["treatment"] = 1.0 - f["treatment"]
    f["outcome"] = np.nan
    np.testing.assert_array_equal(est.predict(replace(trial, frame=f)).draws, res.draws)
    sub = est.predict(trial.subset(np.arange(0, trial.n, 5)))
    np.testing.assert_array_equal(sub.point, res.point[::5])
    # the group ids stochtree demands at prediction do not enter the CATE term
    X = trial.X(est.covariates_)
    n = trial.n
    other = est.model_.predict(X, np.ones(n), propensity=np.full(n, 0.5),
                               rfx_group_ids=np.full(n, 7, dtype=np.int32), terms="cate")
    np.testing.assert_array_equal(np.asarray(other).reshape(n, -1), res.draws)


def test_posterior_intervals(crt_linear):
    trial, _ = crt_linear
    _, res = fitted(trial, QUICK)
    assert res.draws.shape == (trial.n, QUICK["num_mcmc"])
    np.testing.assert_allclose(res.point, res.draws.mean(axis=1))
    assert np.all(res.lower <= res.point) and np.all(res.point <= res.upper)
    np.testing.assert_allclose(res.upper, np.quantile(res.draws, 0.975, axis=1))
    m, lo, hi = res.ate()
    assert lo < m < hi


def test_reproducible_with_random_state(crt_linear):
    trial, _ = crt_linear
    s = dict(QUICK, num_trees_control=40, num_trees_moderate=20)
    a = methods.make("mbcf", s, random_state=3).fit(trial).predict(trial)
    b = methods.make("mbcf", s, random_state=3).fit(trial).predict(trial)
    c = methods.make("mbcf", s, random_state=4).fit(trial).predict(trial)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert not np.array_equal(a.draws, c.draws)


def test_options_run(crt_linear):
    """stochtree's tau_0 intercept, fixed coding and multi-chain GFR warm start all work."""
    trial, _ = crt_linear
    s = dict(num_burnin=0, num_mcmc=10, num_gfr=4, num_chains=2, sample_intercept=True,
             adaptive_coding=False, num_trees_control=30, num_trees_moderate=10)
    _, res = fitted(trial, s)
    assert res.draws.shape == (trial.n, 20) and np.all(np.isfinite(res.draws))


@pytest.mark.parametrize("param, value", [
    ("num_trees_moderate", 0), ("alpha_moderate", 0.0), ("sd_moderate", -1.0),
    ("adaptive_coding", "yes"), ("num_mcmc", 0), ("n_threads", 0),
])
def test_bad_hyperparameters_are_named(param, value, crt_linear):
    trial, _ = crt_linear
    with pytest.raises(MethodError, match=param):
        methods.get("mbcf")(**{param: value}).fit(trial)


def test_bad_input(crt_linear):
    trial, _ = crt_linear
    with pytest.raises(MethodError, match="crt"):
        methods.get("mbcf")(**QUICK).fit(replace(trial, design="multisite"))
    nocov = replace(trial, individual_covariates=(), cluster_covariates=(), moderators=())
    with pytest.raises(MethodError, match="no covariates"):
        methods.get("mbcf")(**QUICK).fit(nocov)
    est, _ = fitted(trial, QUICK)
    with pytest.raises(MethodError, match="X3"):
        est.predict(replace(trial, frame=trial.frame.drop(columns="X3")))


@pytest.mark.slow
def test_interval_coverage_over_replicates():
    """95% intervals cover the true CATE in 85-100% of rows, averaged over 20 replicates."""
    settings = dict(num_burnin=500, num_mcmc=500)
    cover = []
    for rep in range(20):
        trial, tau = make_crt(1000 + rep, "linear")
        res = methods.make("mbcf", settings, random_state=rep).fit(trial).predict(trial)
        cover.append(np.mean((res.lower <= tau) & (tau <= res.upper)))
    print(f"\nmbcf: mean row coverage of the 95% intervals over 20 replicates {np.mean(cover):.3f}")
    assert 0.85 <= np.mean(cover) <= 1.0, np.mean(cover)
