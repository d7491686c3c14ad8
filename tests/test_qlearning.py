"""The seven Q-learning estimators (multisite OTR, spec otr_multisite.md Sec. 1)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.regression.mixed_linear_model import MixedLM

from clusterhte import methods
from clusterhte.data.trial import TrialData
from clusterhte.methods.base import MethodError

Q = ["q-base", "q-fe", "q-ri", "q-rs", "q-dm", "q-dm-ri", "q-dm-rs"]
XN = ("X1", "X2", "X3", "X4", "X5")
MODS = ("X3", "X4", "X5")


def multisite(J=20, nj=40, seed=0, beta1=0.2, extra=False):
    """Train and test tables in the same J sites (Suk & Park's DGP); returns (train, test, delta_test).

    ``extra=True`` adds a cluster-level column ``W`` (declared as a cluster covariate) and a
    cluster-constant column ``V`` declared as an individual covariate (both level-2).
    """
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(J), nj)
    n = g.size
    Rj, U1 = rng.normal(0, 0.9, J), rng.normal(size=J)
    W, V = rng.normal(size=J), rng.normal(size=J)
    out = []
    for _ in range(2):
        X = rng.normal(size=(n, 5))
        trt = rng.binomial(1, 1 / (1 + np.exp(-0.8 * Rj[g]))).astype(float)
        delta = 0.2 + 0.5 * X[:, 2] - 0.2 * X[:, 3] - 0.2 * X[:, 4] + beta1 * U1[g]
        y = (0.7 + X[:, 0] + X[:, 1] - 2 * X[:, 2] + X[:, 3] + 0.5 * X[:, 4] + 2.5 * U1[g]
             + delta * trt + rng.normal(size=n))
        f = pd.DataFrame({"cluster": g, "treatment": trt, "outcome": y, **{c: X[:, k] for k, c in enumerate(XN)}})
        if extra:
            f["W"], f["V"] = W[g] + 0.3 * y.std() * 0, V[g]
            td = TrialData(f, "multisite", XN + ("V",), ("W",), MODS)
        else:
            td = TrialData(f, "multisite", XN, (), MODS)
        out.append((td.validate(require_both_arms=False), delta))
    (train, _), (test, d_test) = out
    return train, test, d_test


@pytest.fixture(scope="module")
def rep():
    return multisite(seed=1, beta1=0.5)  # a clear random slope: lme4 and statsmodels fits are regular


@pytest.fixture(scope="module")
def fits(rep):
    train, test, _ = rep
    return {m: methods.make(m).fit(train) for m in Q}


def design(td, demean=False):
    y, t = td.outcome, td.treatment
    X = td.X(list(XN))
    P = np.column_stack([X, t, X[:, 2:5] * t[:, None]])
    if demean:
        g = td.cluster_codes
        P = P - (pd.DataFrame(P).groupby(g).transform("mean")).to_numpy()
    return y, np.column_stack([np.ones(td.n), P])


def sm_mixed(y, D, g, Z):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = MixedLM(y, D, g, exog_re=Z).fit(reml=True)
    assert m.converged
    return m


def test_fe_dm_dmri_scores_identical(rep, fits):
    _, test, _ = rep
    s = {m: fits[m].predict(test).point for m in ("q-fe", "q-dm", "q-dm-ri")}
    assert np.max(np.abs(s["q-fe"] - s["q-dm"])) < 1e-8
    assert np.max(np.abs(s["q-fe"] - s["q-dm-ri"])) < 1e-8
    assert np.max(np.abs(s["q-fe"] - fits["q-base"].predict(test).point)) > 1e-3  # not trivially equal


def test_qbase_closed_form_ols(rep, fits):
    train, test, _ = rep
    y, D = design(train)
    b = np.linalg.solve(D.T @ D, D.T @ y)
    M = test.X(list(MODS))
    np.testing.assert_allclose(fits["q-base"].predict(test).point, b[6] + M @ b[7:], rtol=1e-10, atol=1e-12)


def test_qfe_equals_dummy_ols(rep, fits):
    train, test, _ = rep
    y, D = design(train)
    dummies = (train.cluster_codes[:, None] == np.arange(1, 20)[None, :]).astype(float)
    Dd = np.column_stack([D, dummies])
    b = np.linalg.lstsq(Dd, y, rcond=None)[0]
    M = test.X(list(MODS))
    np.testing.assert_allclose(fits["q-fe"].predict(test).point, b[6] + M @ b[7:10], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("method,demean", [("q-ri", False), ("q-dm-ri", True)])
def test_random_intercept_against_statsmodels(rep, fits, method, demean):
    train, test, _ = rep
    y, D = design(train, demean)
    sm = sm_mixed(y, D, train.cluster, None)
    est = fits[method]
    np.testing.assert_allclose(est.coef_.to_numpy(), sm.fe_params, rtol=1e-5, atol=1e-7)
    res = est.predict(test)
    M = test.X(list(MODS))
    np.testing.assert_allclose(res.point, sm.fe_params[6] + M @ sm.fe_params[7:], atol=1e-5)
    assert res.info["G"][0][0] == pytest.approx(float(np.asarray(sm.cov_re)[0, 0]), rel=1e-3)


@pytest.mark.parametrize("method,demean", [("q-rs", False), ("q-dm-rs", True)])
def test_random_slope_against_statsmodels(rep, fits, method, demean):
    train, test, _ = rep
    y, D = design(train, demean)
    Z = np.column_stack([np.ones(train.n), D[:, 6]])  # raw or de-meaned treatment
    sm = sm_mixed(y, D, train.cluster, Z)
    est = fits[method]
    assert not est.lmm_.singular and est.lmm_.llf >= sm.llf - 1e-6
    np.testing.assert_allclose(est.coef_.to_numpy(), sm.fe_params, rtol=1e-4, atol=1e-5)
    slope_sm = np.array([np.asarray(sm.random_effects[j])[1] for j in est.lmm_.groups_])
    np.testing.assert_allclose(est.lmm_.blups[:, 1], slope_sm, atol=1e-3)
    res = est.predict(test)
    M = test.X(list(MODS))
    ref = sm.fe_params[6] + slope_sm[test.cluster_codes] + M @ sm.fe_params[7:]
    np.testing.assert_allclose(res.point, ref, atol=2e-3)


def test_boundary_saddle_escaped():
    """A replicate where a gradient method stops at theta_22 = 0 (a saddle); ours must not be worse
    than statsmodels and must not report a singular fit there."""
    train, _, _ = multisite(seed=5, beta1=0.5)
    y, D = design(train, True)
    Z = np.column_stack([np.ones(train.n), D[:, 6]])
    sm = sm_mixed(y, D, train.cluster, Z)
    est = methods.make("q-dm-rs").fit(train)
    assert est.lmm_.llf >= sm.llf - 1e-6
    assert not est.lmm_.singular and est.lmm_.G[1, 1] == pytest.approx(np.asarray(sm.cov_re)[1, 1], rel=1e-2)


def test_slope_methods_vary_by_cluster_ri_does_not(rep, fits):
    _, test, _ = rep
    M = test.X(list(MODS))
    for m in Q:
        est = fits[m]
        base = est.predict(test).point - M @ est.gamma_mod_  # the treatment part of the score
        per_cluster = pd.Series(base).groupby(test.cluster_codes)
        assert np.all(per_cluster.std().fillna(0) < 1e-10)  # constant within a cluster
        spread = np.ptp(base)
        if m in ("q-rs", "q-dm-rs"):
            assert spread > 1e-3
        else:
            assert spread < 1e-12


def test_level2_columns_dropped():
    train, test, _ = multisite(J=12, nj=30, seed=3, extra=True)
    base_train, base_test, _ = multisite(J=12, nj=30, seed=3)
    for m in ("q-base", "q-rs", "q-dm"):
        est = methods.make(m).fit(train)
        res = est.predict(test)
        assert res.info["level2_dropped"] == ["V", "W"]
        assert res.info["main_effects"] == list(XN)
        ref = methods.make(m).fit(base_train).predict(base_test).point
        np.testing.assert_allclose(res.point, ref, rtol=1e-9, atol=1e-10)


def test_moderator_errors():
    train, _, _ = multisite(J=8, nj=20, seed=4, extra=True)
    bad = TrialData(train.frame, "multisite", XN, ("W",), ("X3", "Z9"))
    with pytest.raises(MethodError, match="moderator 'Z9'.*not a covariate"):
        methods.make("q-base").fit(bad)
    lvl2 = TrialData(train.frame, "multisite", XN + ("V",), ("W",), ("X3", "V"))
    with pytest.raises(MethodError, match="moderator 'V'.*level-2"):
        methods.make("q-fe").fit(lvl2)


def test_unseen_test_cluster_gets_population_slope(rep, fits):
    _, test, _ = rep
    f = test.frame.copy()
    f["cluster"] = np.where(f["cluster"] == 0, 99, f["cluster"])
    shifted = TrialData(f, "multisite", XN, (), MODS)
    est = fits["q-rs"]
    res = est.predict(shifted)
    assert res.info["n_unseen_clusters"] == 1
    rows = f["cluster"].to_numpy() == 99
    M = shifted.X(list(MODS))
    np.testing.assert_allclose(res.point[rows], est.gamma_trt_ + M[rows] @ est.gamma_mod_, atol=1e-12)
    np.testing.assert_allclose(res.point[~rows], est.predict(test).point[~rows], atol=1e-12)


def test_string_cluster_labels_and_row_order(rep, fits):
    train, test, _ = rep
    f = train.frame.copy()
    f["cluster"] = "site-" + f["cluster"].astype(str).str.zfill(2)
    perm = np.random.default_rng(1).permutation(len(f))
    tr2 = TrialData(f.iloc[perm].reset_index(drop=True), "multisite", XN, (), MODS)
    g = test.frame.copy()
    g["cluster"] = "site-" + g["cluster"].astype(str).str.zfill(2)
    te2 = TrialData(g, "multisite", XN, (), MODS)
    for m in ("q-rs", "q-fe"):
        np.testing.assert_allclose(methods.make(m).fit(tr2).predict(te2).point,
                                   fits[m].predict(test).point, rtol=1e-6, atol=1e-7)


def test_interface(rep, fits):
    train, test, d = rep
    acc = {}
    for m in Q:
        cls = methods.get(m)
        assert cls.name == m and cls.designs == ("multisite",) and not cls.has_intervals
        res = fits[m].predict(test)
        assert res.point.shape == (test.n,) and np.all(np.isnan(res.lower)) and res.cutoff == 0.0
        acc[m] = np.mean(res.decision == (d > 0))
        assert acc[m] > 0.6
        assert fits[m].get_params() == cls.default_params()
    # the unmeasured site-level moderator (beta1 = 0.5) is captured only by the random slopes
    assert min(acc["q-rs"], acc["q-dm-rs"]) > max(acc[m] for m in Q if not m.endswith("rs")) + 0.1
    crt = TrialData(train.frame, "crt", XN, (), MODS)
    with pytest.raises(MethodError, match="multisite"):
        methods.make("q-ri").fit(crt)


@pytest.mark.parametrize("method", ["q-base", "q-fe", "q-ri", "q-rs", "q-dm", "q-dm-ri", "q-dm-rs"])
def test_aliased_covariate_dropped_like_r_lm(rep, method):
    """A covariate that is an exact linear combination of earlier ones is dropped (R's lm gives it
    NA); the scores equal those of the fit without it. An aliased moderator term is an error."""
    rep = rep[0]
    f = rep.frame.assign(X6=lambda d: 2 * d["X1"] - d["X2"] + 3.0)
    td6 = TrialData(f, "multisite", rep.individual_covariates + ("X6",), (), rep.moderators).validate()
    r6 = methods.make(method, random_state=1).fit(td6).predict(td6)
    r = methods.make(method, random_state=1).fit(rep).predict(rep)
    assert r6.info["aliased_dropped"] == ["X6"]
    np.testing.assert_allclose(r6.point, r.point, atol=1e-6)
    bad = TrialData(f.assign(X3=f["X4"]), "multisite", rep.individual_covariates, (), rep.moderators).validate()
    with pytest.raises(MethodError, match="aliased"):
        methods.make(method, random_state=1).fit(bad)


def test_clear_full_rank_shortcut_agrees_with_the_pivoted_qr():
    """The mixed models skip the pivoted QR only when D'D shows a clearly full-rank design; then
    the QR's rank test passes too. Collinear or nearly collinear designs go to the QR."""
    from clusterhte.methods.qlearning import _clearly_full_rank, _pivoted_qr

    rng = np.random.default_rng(5)
    for n, p in ((50, 3), (625, 12), (5000, 12)):
        D = np.column_stack([np.ones(n), rng.standard_normal((n, p - 1))])
        assert _clearly_full_rank(D) and _pivoted_qr(D)[3] == p
        exact = np.column_stack([D, D[:, 1] - 2 * D[:, 2]])
        assert not _clearly_full_rank(exact) and _pivoted_qr(exact)[3] == p
        near = np.column_stack([D, D[:, 1] + 1e-9 * rng.standard_normal(n)])
        assert not _clearly_full_rank(near)
    assert not _clearly_full_rank(rng.standard_normal((3, 5)))
    assert not _clearly_full_rank(np.empty((4, 0)))
