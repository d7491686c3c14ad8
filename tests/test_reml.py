"""REML/ML linear mixed model core (`clusterhte.mixed.reml`) against closed forms and statsmodels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams

from clusterhte.mixed import reml as R
from clusterhte.mixed.reml import LMMError, fit_lmm


def make(seed, J, sizes, sd=(1.0, 0.7), corr=0.3, p=3):
    """Clusters with a correlated random intercept and 0/1-treatment slope; sizes int or (lo, hi)."""
    rng = np.random.default_rng(seed)
    nj = np.full(J, sizes) if np.isscalar(sizes) else rng.integers(sizes[0], sizes[1], J)
    g = np.repeat(np.arange(J), nj)
    n = g.size
    t = rng.binomial(1, 0.5, n).astype(float)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1)), t])
    b = np.column_stack([rng.normal(0, sd[0], J), np.zeros(J)])
    if sd[1] > 0:
        C = np.array([[sd[0] ** 2, corr * sd[0] * sd[1]], [corr * sd[0] * sd[1], sd[1] ** 2]])
        b = rng.multivariate_normal([0, 0], C, J)
    y = X @ np.linspace(0.5, -0.5, X.shape[1]) + b[g, 0] + b[g, 1] * t + rng.normal(size=n)
    return y, X, g, np.column_stack([np.ones(n), t])


FIXTURES = {
    "intercept": (make(1, 20, 30), False),
    "slope": (make(2, 30, 40), True),
    "unbalanced-intercept": (make(3, 25, (3, 60)), False),
    "unbalanced-slope": (make(3, 25, (3, 60)), True),
}


def sm_fit(y, X, g, Z, reml):
    """statsmodels MixedLM, polished from its own optimum with a tight BFGS (None if not converged)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = MixedLM(y, X, g, exog_re=Z)
        m = mod.fit(reml=reml)
        if not m.converged:
            return None
        m2 = mod.fit(reml=reml, method="bfgs", gtol=1e-10, start_params=m.params)
    return m2 if (m2.converged and m2.llf >= m.llf) else m


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("fx", list(FIXTURES))
def test_against_statsmodels(fx, reml):
    (y, X, g, Z), slope = FIXTURES[fx]
    Z = Z if slope else None
    ours = fit_lmm(y, X, g, Z, reml=reml)
    assert ours.converged and not ours.singular
    sm = sm_fit(y, X, g, Z, reml)
    if sm is None or sm.llf > ours.llf + 1e-8:  # statsmodels failed, or found a better optimum
        assert sm is not None, "statsmodels did not converge on a regular fixture"
        pytest.fail(f"statsmodels found a higher log-likelihood ({sm.llf} > {ours.llf})")
    np.testing.assert_allclose(ours.beta, sm.fe_params, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(ours.G, np.asarray(sm.cov_re), rtol=1e-3, atol=1e-3 * np.abs(ours.G).max())
    assert ours.sigma2 == pytest.approx(sm.scale, rel=1e-3)
    assert ours.llf == pytest.approx(sm.llf, abs=1e-5)
    sm_re = np.array([np.asarray(sm.random_effects[k]) for k in ours.groups_])
    np.testing.assert_allclose(ours.blups, sm_re, atol=1e-3)
    # statsmodels' standard errors come from the numerical Hessian of the full likelihood, ours
    # from sigma2 (X'V^-1 X)^-1 (checked exactly in test_closed_form_gls_and_blups): close, not equal
    np.testing.assert_allclose(ours.bse, np.asarray(sm.bse_fe), rtol=5e-3)


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
def test_llf_equals_statsmodels_loglike_at_same_parameters(reml):
    """Same criterion, constants included: statsmodels' log-likelihood evaluated at our estimates."""
    y, X, g, Z = FIXTURES["unbalanced-slope"][0]
    ours = fit_lmm(y, X, g, Z, reml=reml)
    mod = MixedLM(y, X, g, exog_re=Z)
    mod.reml, mod.cov_pen, mod.fe_pen = reml, None, None  # what MixedLM.fit sets before optimising
    pr = MixedLMParams.from_components(ours.beta, cov_re=ours.G / ours.sigma2)
    assert mod.loglike(pr, profile_fe=False) == pytest.approx(ours.llf, abs=1e-8)


def test_closed_form_gls_and_blups():
    """beta = GLS with V = Z G Z' + sigma2 I; BLUP_j = G Z_j' V_j^{-1} (y_j - X_j beta) (dense algebra)."""
    y, X, g, Z = make(5, 8, (5, 15))
    r = fit_lmm(y, X, g, Z)
    V = r.sigma2 * np.eye(len(y)) + (Z @ r.G @ Z.T) * (g[:, None] == g[None, :])
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    np.testing.assert_allclose(r.beta, beta, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(r.cov_beta, np.linalg.inv(X.T @ Vi @ X), rtol=1e-8)
    res = y - X @ beta
    blups = np.array([r.G @ Z[g == j].T @ np.linalg.solve(V[np.ix_(g == j, g == j)], res[g == j])
                      for j in r.groups_])
    np.testing.assert_allclose(r.blups, blups, rtol=1e-8, atol=1e-10)
    # REML log-likelihood from its textbook formula
    n, p = X.shape
    llf = -0.5 * (np.linalg.slogdet(V)[1] + np.linalg.slogdet(X.T @ Vi @ X)[1] + res @ Vi @ res
                  + (n - p) * np.log(2 * np.pi))
    assert r.llf == pytest.approx(llf, abs=1e-8)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("q", [1, 2])
def test_gradient_matches_central_differences(q, reml):
    y, X, g, Z = make(6, 12, (4, 30))
    Zq = Z[:, :q]
    codes = np.unique(g, return_inverse=True)[1]
    st = R.sufficient_stats(y, X, codes, Zq, codes.max() + 1)
    th = np.array([0.8, -0.3, 0.5])[: q * (q + 1) // 2]
    _, grad = R._deviance(th, st, reml)
    h = 1e-5
    num = [(R._deviance(th + h * e, st, reml, grad=False) - R._deviance(th - h * e, st, reml, grad=False))
           / (2 * h) for e in np.eye(th.size)]
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-6)


def test_singular_slope_variance_returns_boundary_fit():
    y, X, g, Z = make(8, 30, 40, sd=(1.0, 0.0))
    r = fit_lmm(y, X, g, Z)
    assert r.singular
    assert np.all(np.isfinite(r.G)) and np.all(np.linalg.eigvalsh(r.G) >= -1e-12)
    assert 0 <= r.G[1, 1] < 0.01 and r.G[0, 0] > 0.3
    sm = sm_fit(y, X, g, Z, True)
    if sm is not None:  # statsmodels is never better than our boundary fit
        assert r.llf >= sm.llf - 1e-8


def test_zero_intercept_variance_is_exactly_zero_and_ols():
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(10), 20)
    X = np.column_stack([np.ones(200), rng.normal(size=200)])
    # outcome with negative within-cluster correlation: REML variance hits the boundary
    e = rng.normal(size=200)
    e = e - 1.5 * (np.bincount(g, e) / 20)[g]
    y = X @ [1.0, 2.0] + e
    r = fit_lmm(y, X, g)
    assert r.singular and r.G[0, 0] == 0.0 and r.theta[0] == 0.0
    np.testing.assert_allclose(r.beta, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-10)
    np.testing.assert_allclose(r.blups, 0.0)


def test_blup_for_labels_and_unseen():
    y, X, g, Z = make(8, 6, 20)
    labels = np.array(list("fedcba"))[g]
    r = fit_lmm(y, X, labels, Z)
    assert list(r.groups_) == list("abcdef")
    out = r.blup_for(np.array(["c", "zz", "a", "c"]))
    np.testing.assert_array_equal(out[0], r.blups[2])
    np.testing.assert_array_equal(out[1], [0.0, 0.0])
    np.testing.assert_array_equal(out[2], r.blups[0])


def test_row_order_does_not_matter():
    y, X, g, Z = make(9, 10, (5, 25))
    perm = np.random.default_rng(0).permutation(len(y))
    a, b = fit_lmm(y, X, g, Z), fit_lmm(y[perm], X[perm], g[perm], Z[perm])
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-8)
    np.testing.assert_allclose(a.blups, b.blups, rtol=1e-6, atol=1e-9)


def test_bad_input_errors():
    y, X, g, Z = make(10, 5, 10)
    with pytest.raises(LMMError, match="rank deficient"):
        fit_lmm(y, np.column_stack([X, X[:, 1]]), g)
    with pytest.raises(LMMError, match="at least 2 groups"):
        fit_lmm(y, X, np.zeros(len(y)))
    with pytest.raises(LMMError, match="X must have"):
        fit_lmm(y, X[:-1], g)
    yb = y.copy(); yb[3] = np.nan
    with pytest.raises(LMMError, match=r"y has missing.*rows \[3\]"):
        fit_lmm(yb, X, g)
