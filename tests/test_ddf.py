"""Small-sample df (clusterhte.mixed.ddf) and aliased columns (clusterhte.mixed.design).

References: lmerTest 3.1.3 (Satterthwaite) and pbkrtest 0.5.2 (Kenward-Roger) on three draws of the
battery's 10-cluster scenario (tests/data/lmm_small_trials.csv; values from
tests/data/lmm_ddf_reference.R), and dense n x n formulas on small data.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clusterhte.data.trial import TrialData
from clusterhte.methods.gamm import GAMM
from clusterhte.methods.lmm import LMM
from clusterhte.mixed.ddf import (penalized_information, penalized_satterthwaite, t_interval,
                                  varcomp_inference)
from clusterhte.mixed.design import AliasedColumnsWarning, drop_aliased, independent_columns
from clusterhte.mixed.reml import fit_lmm

from conftest import ROOT

DATA = ROOT / "tests" / "data"
COVS = ("X1", "X2", "X3", "X4", "V1", "V2")
ROWS = {"ate": None, "row1": 0, "row50": 49, "row100": 99}


def small_trial(name: str) -> TrialData:
    d = pd.read_csv(DATA / "lmm_small_trials.csv")
    f = d[d["dataset"] == name].drop(columns="dataset").reset_index(drop=True)
    return TrialData(f, "crt", COVS[:4], COVS[4:], name=f"small trial {name}").validate()


@pytest.fixture(scope="module")
def reference():
    return pd.read_csv(DATA / "lmm_ddf_reference.csv").fillna({"dropped": ""})


def _ours(td, ddf):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AliasedColumnsWarning)
        res = LMM(ddf=ddf, spline_knots=0).fit(td).predict(td)
    out = {}
    for nm, i in ROWS.items():
        if i is None:
            lo, hi = res.info["ate_interval"]
            out[nm] = (res.point.mean(), res.info["ate_se"], res.info["ate_df"], lo, hi)
        else:
            out[nm] = (res.point[i], res.info["se"][i], res.info["df"][i], res.lower[i], res.upper[i])
    return res, out


@pytest.mark.parametrize("dataset", ["interior", "boundary", "aliased"])
def test_lmm_against_lmertest_and_pbkrtest(dataset, reference):
    """Estimates, SEs, df and t bounds of the ATE and three CATE contrasts: Kenward-Roger equals
    pbkrtest; Satterthwaite equals lmerTest except when the cluster variance is 0 (lmerTest then
    gives the residual df n - p, we keep the cluster-level df)."""
    td = small_trial(dataset)
    ref = reference[reference["dataset"] == dataset]
    for ddf, rname in (("kenward-roger", "Kenward-Roger"), ("satterthwaite", "Satterthwaite")):
        res, ours = _ours(td, ddf)
        assert res.info["dropped"] == [c for c in ref["dropped"].iloc[0].split(";") if c]
        assert res.info["tau2"] == pytest.approx(ref["tau2"].iloc[0], rel=1e-4, abs=1e-7)
        r = ref[ref["method"] == rname].set_index("contrast")
        for nm, (est, se, df, lo, hi) in ours.items():
            assert est == pytest.approx(r.loc[nm, "estimate"], abs=1e-6)
            assert se == pytest.approx(r.loc[nm, "se"], rel=1e-5)
            if dataset == "boundary" and ddf == "satterthwaite":
                n_p = td.n - 14
                assert r.loc[nm, "df"] == pytest.approx(n_p, rel=1e-6)  # lmerTest's residual df
                kr = reference.query("dataset == @dataset and method == 'Kenward-Roger' and contrast == @nm")
                assert df == pytest.approx(float(kr["df"].iloc[0]), rel=1e-4)  # expected information
                continue
            assert df == pytest.approx(r.loc[nm, "df"], rel=1e-4)
            assert lo == pytest.approx(r.loc[nm, "lower"], abs=1e-5)
            assert hi == pytest.approx(r.loc[nm, "upper"], abs=1e-5)
    # the ATE of a 10-cluster trial with 6 cluster-level coefficients: about 10 - 6 df
    res, ours = _ours(td, "kenward-roger")
    assert 2.5 < ours["ate"][2] < 8


def test_aliased_column_is_named_in_a_warning():
    td = small_trial("aliased")
    with pytest.warns(AliasedColumnsWarning, match=r"small trial aliased.*\['treatment:V2'\]"):
        est = LMM().fit(td)
    res = est.predict(td)
    assert np.all(np.isfinite(res.point)) and np.all(np.isfinite(res.lower)) and np.all(np.isfinite(res.upper))
    assert res.info["beta"]["treatment:V2"] == 0.0
    with pytest.warns(AliasedColumnsWarning, match=r"method 'gamm'.*\['treatment:V2'\]"):
        g = GAMM().fit(td).predict(td)
    assert g.info["dropped"] == ["treatment:V2"] and np.all(np.isfinite(g.upper))
    assert np.max(g.info["se"]) < 5


# --------------------------------------------------------------------------- dense references
def _dense(y, X, Gs, psi):
    V = sum(p * G for p, G in zip(psi, Gs))
    Vi = np.linalg.inv(V)
    Phi = np.linalg.inv(X.T @ Vi @ X)
    P = Vi - Vi @ X @ Phi @ X.T @ Vi
    IE2 = np.array([[np.trace(P @ a @ P @ b) for b in Gs] for a in Gs])
    Pk = [-X.T @ Vi @ G @ Vi @ X for G in Gs]
    Q = [[X.T @ Vi @ a @ Vi @ b @ Vi @ X for b in Gs] for a in Gs]
    return Vi, Phi, P, IE2, Pk, Q


def _reml_dev(y, X, Gs, psi):
    V = sum(p * G for p, G in zip(psi, Gs))
    Vi = np.linalg.inv(V)
    XVX = X.T @ Vi @ X
    P = Vi - Vi @ X @ np.linalg.solve(XVX, X.T @ Vi)
    return np.linalg.slogdet(V)[1] + np.linalg.slogdet(XVX)[1] + y @ P @ y


def test_varcomp_inference_equals_dense_formulas():
    """Two crossed random intercepts + residual (K = 3): P_k, expected and observed information and
    the Kenward-Roger covariance against n x n algebra (observed: central differences of the REML
    deviance)."""
    rng = np.random.default_rng(5)
    n, J1, J2 = 90, 9, 5
    g1, g2 = rng.integers(0, J1, n), rng.integers(0, J2, n)
    Z1, Z2 = np.eye(J1)[g1], np.eye(J2)[g2]
    X = np.column_stack([np.ones(n), rng.binomial(1, 0.5, n), rng.normal(size=n)])
    y = X @ [1, 0.5, -0.3] + Z1 @ rng.normal(0, 0.7, J1) + Z2 @ rng.normal(0, 0.5, J2) + rng.normal(size=n)
    psi = np.array([0.45, 0.2, 0.9])
    Gs = [Z1 @ Z1.T, Z2 @ Z2.T, np.eye(n)]
    inf = varcomp_inference(y, X, [Z1, Z2], psi)
    # integer codes stand for indicator matrices
    inf_codes = varcomp_inference(y, X, [g1, Z2], psi)
    np.testing.assert_allclose(inf_codes.IE2, inf.IE2, rtol=1e-12)
    np.testing.assert_allclose(inf_codes.Phi_A, inf.Phi_A, rtol=1e-12)
    np.testing.assert_allclose(inf_codes.H_obs, inf.H_obs, rtol=1e-10)
    inf_codes = varcomp_inference(y, X, [Z1, g2], psi)
    np.testing.assert_allclose(inf_codes.IE2, inf.IE2, rtol=1e-12)
    Vi, Phi, P, IE2, Pk, Q = _dense(y, X, Gs, psi)
    np.testing.assert_allclose(inf.Phi, Phi, rtol=1e-9)
    np.testing.assert_allclose(inf.P, np.array(Pk), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(inf.IE2, IE2, rtol=1e-8)
    W = 2 * np.linalg.inv(IE2)
    U = sum(W[k, l] * (Q[k][l] - Pk[k] @ Phi @ Pk[l]) for k in range(3) for l in range(3))
    np.testing.assert_allclose(inf.Phi_A, Phi + 2 * Phi @ U @ Phi, rtol=1e-8)
    # observed Hessian of -2 l_R (linear in psi) by central differences
    h = 1e-4
    H = np.empty((3, 3))
    E = np.eye(3) * h
    for a in range(3):
        for b in range(3):
            H[a, b] = (_reml_dev(y, X, Gs, psi + E[a] + E[b]) - _reml_dev(y, X, Gs, psi + E[a] - E[b])
                       - _reml_dev(y, X, Gs, psi - E[a] + E[b]) + _reml_dev(y, X, Gs, psi - E[a] - E[b])) / (4 * h * h)
    np.testing.assert_allclose(inf.H_obs, H, rtol=1e-4)
    # Satterthwaite df of a contrast with the observed information, by hand
    c = np.array([0.0, 1.0, 0.5])
    g = np.array([-c @ Phi @ pk @ Phi @ c for pk in Pk])
    se, df = inf.satterthwaite(c[None])
    W = 2 * np.linalg.inv(H) if np.all(np.linalg.eigvalsh(H) > 0) else 2 * np.linalg.inv(IE2)
    assert df[0] == pytest.approx(2 * (c @ Phi @ c) ** 2 / (g @ W @ g), rel=1e-4)
    # at a zero variance the observed information is not used and the df stay finite
    inf0 = varcomp_inference(y, X, [Z1, Z2], np.array([0.0, 0.2, 0.9]))
    assert inf0.W_obs is None
    assert 1 <= inf0.satterthwaite(c[None])[1][0] < n


def test_penalized_information_and_gradient_equal_mixed_model_form():
    """GAMM df ingredients against the explicit mixed model: fixed = unpenalised directions, random
    = penalised ones with covariance tau2_k S_k^+; V and P formed n x n. The gradient of c'Vp c
    against central differences in (tau2_k, phi)."""
    from conftest import make_crt

    td, _ = make_crt(7, "linear", M=12, size=10)
    est = GAMM().fit(td)
    X = np.column_stack([est.terms_.design(td)[:, est.keep_], np.eye(12)[td.cluster_codes]])
    blocks = est.scaled_blocks_
    # interior smoothing parameters (at the fitted ones two blocks sit near the upper bound, where
    # central differences of c'Vp c lose all precision; the boundary is checked against the LMM below)
    lam, phi, n = np.exp([1.0, -1.0, 0.5, 0.0, -0.5]), est.fit_.phi, td.n
    assert len(blocks) == lam.size
    XtX = X.T @ X
    A = XtX.copy()
    for l_, (sl, S) in zip(lam, blocks):
        A[sl, sl] += l_ * S
    IE2 = penalized_information(XtX, np.linalg.inv(A), blocks, phi, n)
    # explicit mixed model
    fixed_cols, Gs = [], []
    in_block = np.zeros(X.shape[1], bool)
    for (sl, S), l_ in zip(blocks, lam):
        in_block[sl] = True
        ev, U = np.linalg.eigh(S)
        rng_ = ev > 1e-10 * ev.max()
        fixed_cols.append(X[:, sl] @ U[:, ~rng_])
        Zk = X[:, sl] @ U[:, rng_]
        Gs.append(Zk @ np.diag(1 / ev[rng_]) @ Zk.T)
    Xf = np.column_stack([X[:, ~in_block]] + fixed_cols)
    Gs.append(np.eye(n))
    psi = np.r_[phi / lam, phi]
    _, _, P, IE2_dense, _, _ = _dense(td.outcome, Xf, Gs, psi)
    np.testing.assert_allclose(IE2, IE2_dense, rtol=1e-5)
    # gradient of the contrast variance, via the df: 2 v^2 / (g'Wg) with numerical g
    C = (est.terms_.design(td, 1.0) - est.terms_.design(td, 0.0))[:, est.keep_]
    c = np.r_[C.mean(axis=0), np.zeros(12)]

    def var(ps):
        lam_ = ps[-1] / ps[:-1]
        Am = XtX.copy()
        for l_, (sl, S) in zip(lam_, blocks):
            Am[sl, sl] += l_ * S
        return ps[-1] * c @ np.linalg.solve(Am, c)

    g = np.array([(var(psi + e * h) - var(psi - e * h)) / (2 * h)
                  for e, h in zip(np.eye(psi.size), 1e-5 * psi)])
    W = 2 * np.linalg.inv(IE2_dense)
    se, df = penalized_satterthwaite(XtX, A, blocks, lam, phi, n, c[None])
    assert se[0] ** 2 == pytest.approx(var(psi), rel=1e-10)
    assert df[0] == pytest.approx(2 * var(psi) ** 2 / (g @ W @ g), rel=1e-4)


@pytest.mark.parametrize("dataset", ["interior", "boundary"])
def test_gamm_df_match_lmm_kenward_roger_df_on_fixture(dataset, reference):
    """A GAMM without smooths is the random-intercept LMM; its Satterthwaite df (expected
    information) equal pbkrtest's df on the R fixture, also when the cluster variance is 0 (the
    ridge's smoothing parameter then sits near its upper bound e^20)."""
    td = small_trial(dataset)
    ref = reference.query("dataset == @dataset and method == 'Kenward-Roger'").set_index("contrast")
    g = GAMM(min_unique_smooth=10_000).fit(td).predict(td)
    assert g.info["ate_df"] == pytest.approx(ref.loc["ate", "df"], rel=1e-4)
    for nm, i in ROWS.items():
        if i is not None:
            assert g.info["df"][i] == pytest.approx(ref.loc[nm, "df"], rel=1e-4)


# --------------------------------------------------------------------------- helpers
def test_t_interval():
    lo, hi = t_interval([1.0, 2.0], [0.5, 1.0], [4.0, np.inf])
    q = stats.t.ppf(0.975, 4)
    np.testing.assert_allclose(lo, [1 - q * 0.5, 2 - stats.norm.ppf(0.975)])
    np.testing.assert_allclose(hi, [1 + q * 0.5, 2 + stats.norm.ppf(0.975)])
    lo, hi = t_interval(0.0, 1.0, None, level=0.9)
    assert hi == pytest.approx(stats.norm.ppf(0.95))
    with pytest.raises(ValueError, match="positive"):
        t_interval(0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="level"):
        t_interval(0.0, 1.0, 3.0, level=95)


def test_independent_columns_in_order_like_r():
    rng = np.random.default_rng(1)
    n = 50
    A = np.repeat([0.0, 1.0], 25)
    x = rng.normal(size=n)
    # V = A: V and A x V (= A) are dropped, not A (R keeps the earlier column)
    X = np.column_stack([np.ones(n), A, x, A, A * A, np.zeros(n)])
    np.testing.assert_array_equal(independent_columns(X), [1, 1, 1, 0, 0, 0])
    # tolerance 1e-7 on the relative residual norm, as R's qr()
    e = rng.normal(size=n)
    e -= np.column_stack([np.ones(n), x]) @ np.linalg.lstsq(np.column_stack([np.ones(n), x]), e, rcond=None)[0]
    e /= np.linalg.norm(e)
    for eps, kept in ((1e-9, False), (1e-5, True)):
        col = 2 * x + eps * np.linalg.norm(2 * x) * e
        assert independent_columns(np.column_stack([np.ones(n), x, col]))[2] == kept
    with pytest.warns(AliasedColumnsWarning, match=r"my design.*\['a2', 'zero'\]"):
        Xk, keep, dropped = drop_aliased(np.column_stack([np.ones(n), A, A, np.zeros(n)]),
                                         ["one", "a", "a2", "zero"], "my design")
    assert Xk.shape == (n, 2) and dropped == ["a2", "zero"]


def test_ddf_equals_between_cluster_df_in_balanced_crt():
    """Balanced CRT with a cluster-level treatment and no covariates: the exact test of the arm
    effect is the t test of the cluster means with J - 2 df, and Kenward-Roger / Satterthwaite
    (expected information) reproduce it (SE and df) whenever the cluster variance is positive."""
    rng = np.random.default_rng(3)
    J, m = 12, 7
    g = np.repeat(np.arange(J), m)
    A = (g % 2).astype(float)
    y = 0.3 * A + rng.normal(0, 0.6, J)[g] + rng.normal(size=J * m)
    X = np.column_stack([np.ones(J * m), A])
    r = fit_lmm(y, X, g)
    assert r.G[0, 0] > 0
    inf = varcomp_inference(y, X, [np.eye(J)[g]], [r.G[0, 0], r.sigma2])
    se, df = inf.kenward_roger(np.array([[0.0, 1.0]]))
    means = np.bincount(g, weights=y) / m
    t_se = np.sqrt(np.var(means[A[::m] == 1], ddof=1) / 6 + np.var(means[A[::m] == 0], ddof=1) / 6)
    pooled = np.sqrt((np.var(means[1::2], ddof=1) + np.var(means[0::2], ddof=1)) / 2 * (2 / 6))
    assert df[0] == pytest.approx(J - 2, rel=1e-6)
    assert se[0] == pytest.approx(pooled, rel=1e-6)
    assert t_se == pytest.approx(pooled, rel=1e-12)
