"""glmnet-style weighted lasso (no intercept): closed forms, KKT, scikit-learn, CV identities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Lasso

from clusterhte.methods.base import MethodError
from clusterhte.methods.lasso import cv_lasso, lasso_path, select_lambda_min


def _problem(seed=0, n=400, p=8, shift=0.5):
    """A +-1-coded weighted design like the weighting estimators': (X, y, w, pf)."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, n)
    x = rng.normal(size=(n, p - 1)) + shift
    X = (2 * t - 1)[:, None] * np.column_stack([np.ones(n), x])
    beta = np.zeros(p)
    beta[:4] = [0.4, 0.8, -0.6, 0.3]
    y = 1.5 + X @ beta + rng.normal(size=n) * 1.5
    w = rng.uniform(1.0, 4.0, n)
    pf = np.r_[0.0, np.ones(p - 1)]
    return X, y, w, pf


def _wls(X, y, w):
    Xw = X * w[:, None]
    return np.linalg.solve(X.T @ Xw, Xw.T @ y)


def _wsd(X, w):
    wn = w / w.sum()
    m = wn @ X
    return np.sqrt(wn @ (X - m) ** 2)


def test_all_unpenalised_equals_wls():
    X, y, w, _ = _problem(1)
    lam, B = lasso_path(X, y, w, np.zeros(X.shape[1]))
    np.testing.assert_allclose(B[0], _wls(X, y, w), rtol=1e-10, atol=1e-10)
    assert lam.tolist() == [0.0]


def test_lambda_to_zero_equals_wls():
    X, y, w, pf = _problem(2)
    lam, B = lasso_path(X, y, w, pf, lambdas=[0.0], tol=1e-26)
    np.testing.assert_allclose(B[0], _wls(X, y, w), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("standardize", [True, False])
def test_kkt_along_the_path(standardize):
    X, y, w, pf = _problem(3)
    pf = pf.copy()
    pf[2] = 2.0     # unequal penalties: checked after glmnet's rescaling to sum p
    lam, B = lasso_path(X, y, w, pf, standardize=standardize, tol=1e-22)
    p = X.shape[1]
    vp = pf * p / pf.sum()
    s = _wsd(X, w) if standardize else np.ones(p)
    wn = w / w.sum()
    nz_seen = 0
    for k in (0, 3, 10, 25, len(lam) - 1):
        b = B[k]
        grad = X.T @ (wn * (y - X @ b))
        bound = lam[k] * vp * s
        act = b != 0
        nz_seen += act[1:].sum()
        np.testing.assert_allclose(grad[act], bound[act] * np.sign(b[act]), atol=1e-9)
        assert np.all(np.abs(grad[~act]) <= bound[~act] + 1e-9)
    assert nz_seen > 0


def test_matches_sklearn_lasso_after_rescaling():
    X, y, w, pf = _problem(4)
    X, pf = X[:, 1:], np.array([1.0, 0.5, 2.0, 1.0, 1.0, 3.0, 1.0])   # all penalised
    p = X.shape[1]
    vp = pf * p / pf.sum()
    s = _wsd(X, w)
    lam, B = lasso_path(X, y, w, pf, nlambda=20, tol=1e-24)
    Z = X / (vp * s)
    for k in (2, 8, 15):
        m = Lasso(alpha=lam[k], fit_intercept=False, tol=1e-14, max_iter=200_000)
        m.fit(Z, y, sample_weight=w)
        np.testing.assert_allclose(m.coef_ / (vp * s), B[k], atol=1e-7)
        assert np.count_nonzero(B[k]) >= 1


def test_unpenalised_columns_at_lambda_max():
    X, y, w, pf = _problem(5)
    pf = pf.copy()
    pf[1] = 0.0                                  # Trt and column 1 unpenalised
    lam, B = lasso_path(X, y, w, pf, tol=1e-20)
    u = pf == 0
    b_u = _wls(X[:, u], y, w)
    np.testing.assert_allclose(B[0, u], b_u, rtol=1e-8)
    assert np.all(B[0, u] != 0)
    assert np.all(B[:, u] != 0)
    assert np.all(B[0, ~u] == 0)
    # lambda_max is the smallest lambda with every penalised column at zero (original scale)
    p = X.shape[1]
    vp = pf * p / pf.sum()
    wn = w / w.sum()
    r = y - X[:, u] @ b_u
    s = _wsd(X, w)
    lmax = np.max(np.abs(X[:, ~u].T @ (wn * r)) / (vp[~u] * s[~u]))
    assert lam[0] == pytest.approx(lmax, rel=1e-6)
    assert np.count_nonzero(B[1, ~u]) >= 1
    # log-spaced with glmnet's ratio (n >= p: 1e-4) when the path is not truncated
    np.testing.assert_allclose(np.diff(np.log(lam)), np.log(1e-4) / 99, rtol=1e-10)


def test_default_ratio_when_n_below_p():
    rng = np.random.default_rng(6)
    n, p = 30, 40
    X = rng.normal(size=(n, p))
    y = X[:, 0] * 2 + rng.normal(size=n)
    lam, _ = lasso_path(X, y, np.ones(n), np.ones(p), nlambda=10)
    np.testing.assert_allclose(np.diff(np.log(lam)), np.log(0.01) / 9, rtol=1e-10)


def test_early_stop_rule_of_glmnet():
    X, y, w, pf = _problem(12)
    lam, B = lasso_path(X, y, w, pf, tol=1e-16)
    assert 5 <= len(lam) < 100
    # deviance ratio on glmnet's scale: explained share of the weighted (uncentred) SS over ys^2
    wn = w / w.sum()
    ys2 = wn @ y ** 2 - (wn @ y) ** 2
    rsq = np.array([(wn @ y ** 2 - wn @ (y - X @ b) ** 2) / ys2 for b in B])
    stop = (np.diff(rsq) < 1e-5 * rsq[1:]) | (rsq[1:] > 0.999)   # stop[k] refers to lambda k+1
    assert stop[-1] and not stop[3:-1].any()
    # a user-supplied sequence is never truncated
    lam2, B2 = lasso_path(X, y, w, pf, lambdas=lam[0] * 1e-4 ** (np.arange(100) / 99))
    assert len(lam2) == 100


def test_lambda_min_is_largest_at_minimum():
    lam = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert select_lambda_min(lam, np.array([3.0, 1.0, 1.0, 2.0, 1.0])) == 1
    assert select_lambda_min(lam[::-1], np.array([1.0, 2.0, 1.0, 1.0, 3.0])) == 3
    assert select_lambda_min(lam, np.array([np.nan, 2.0, 0.5, 0.5, np.inf])) == 2


def test_cv_ties_above_lambda_max_pick_the_largest():
    # every lambda above every fold's lambda_max: identical fits, tied CV error
    X, y, w, pf = _problem(7)
    foldid = np.resize(np.arange(5), len(y))
    lam0, _ = lasso_path(X, y, w, pf)
    # increasing order, so that "first index at the minimum" would pick the smallest lambda
    cv = cv_lasso(X, y, w, pf, foldid, lambdas=lam0[0] * np.array([10.0, 20.0, 30.0, 40.0]))
    assert np.ptp(cv.cvm) == 0.0
    assert cv.index_min == 3 and cv.lambda_min == cv.lambdas.max()


def _r_lambda_interp(lam, s):
    """Line-by-line port of glmnet's R ``lambda.interp`` (1-based indices, as in R)."""
    k = len(lam)
    sfrac = (lam[0] - s) / (lam[0] - lam[k - 1])
    ln = (lam[0] - lam) / (lam[0] - lam[k - 1])
    sfrac = np.where(sfrac < ln.min(), ln.min(), sfrac)
    sfrac = np.where(sfrac > ln.max(), ln.max(), sfrac)
    coord = np.interp(sfrac, ln, np.arange(1, k + 1))
    left, right = np.floor(coord).astype(int), np.ceil(coord).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (sfrac - ln[right - 1]) / (ln[left - 1] - ln[right - 1])
    frac[left == right] = 1
    return left - 1, right - 1, frac


def test_cv_error_equals_refitting_each_fold_on_its_own_path():
    """cv.glmnet: each fold on its own lambda sequence, held-out predictions interpolated at the
    full-data lambdas; checked against explicit refits and a port of R's lambda.interp."""
    X, y, w, pf = _problem(8, n=300)
    rng = np.random.default_rng(0)
    foldid = rng.permutation(np.resize(np.arange(1, 6), len(y)))
    off = rng.normal(size=len(y))
    cv = cv_lasso(X, y, w, pf, foldid, offset=off, nlambda=30)
    sse = np.zeros(len(cv.lambdas))
    for k in range(1, 6):
        tr, te = foldid != k, foldid == k
        lk, Bk = lasso_path(X[tr], y[tr], w[tr], pf, nlambda=30, offset=off[tr])
        np.testing.assert_allclose(cv.fold_lambdas[k - 1], lk, rtol=1e-12)
        assert lk[0] != cv.lambdas[0]  # a fold's own lambda_max
        left, right, frac = _r_lambda_interp(lk, cv.lambdas)
        Bs = frac[:, None] * Bk[left] + (1 - frac)[:, None] * Bk[right]
        r = (y[te] - off[te])[:, None] - X[te] @ Bs.T
        sse += (w[te][:, None] * r ** 2).sum(axis=0)
    np.testing.assert_allclose(cv.cvm, sse / w.sum(), rtol=1e-9)
    i = int(np.argmin(cv.cvm))
    assert cv.index_min == i and cv.lambda_min == cv.lambdas[i]
    np.testing.assert_array_equal(cv.coef_min, cv.coefs[i])
    _, Bfull = lasso_path(X, y, w, pf, offset=off, nlambda=30)
    np.testing.assert_allclose(cv.coefs, Bfull, rtol=1e-9, atol=1e-12)


def test_site_dummies_without_forming_them_equal_the_dense_design():
    X, y, w, pf = _problem(11, n=240)
    rng = np.random.default_rng(4)
    J = 12
    codes = rng.integers(0, J, len(y))
    sign = np.where(rng.random(len(y)) < 0.5, -1.0, 1.0)
    D = np.zeros((len(y), J - 1))
    on = codes > 0
    D[np.flatnonzero(on), codes[on] - 1] = sign[on]
    pf2 = np.r_[pf, np.ones(J - 1)]
    foldid = rng.permutation(np.resize(np.arange(1, 6), len(y)))
    dense = cv_lasso(np.column_stack([X, D]), y, w, pf2, foldid)
    sparse = cv_lasso(X, y, w, pf2, foldid, dummies=(codes - 1, sign, J - 1))
    np.testing.assert_allclose(sparse.lambdas, dense.lambdas, rtol=1e-10)
    np.testing.assert_allclose(sparse.cvm, dense.cvm, rtol=1e-8)
    assert sparse.index_min == dense.index_min
    np.testing.assert_allclose(sparse.coefs, dense.coefs, rtol=1e-7, atol=1e-10)


def test_offset_is_subtracting_from_y():
    X, y, w, pf = _problem(9)
    off = np.random.default_rng(1).normal(size=len(y)) * 2
    l1, B1 = lasso_path(X, y, w, pf, offset=off)
    l2, B2 = lasso_path(X, y - off, w, pf)
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(B1, B2)
    foldid = np.resize(np.arange(5), len(y))
    c1 = cv_lasso(X, y, w, pf, foldid, offset=off)
    c2 = cv_lasso(X, y - off, w, pf, foldid)
    np.testing.assert_allclose(c1.cvm, c2.cvm, rtol=1e-12)
    assert c1.lambda_min == c2.lambda_min


def test_weights_scale_invariant_and_constant_column_zero():
    X, y, w, pf = _problem(10)
    l1, B1 = lasso_path(X, y, w, pf)
    l2, B2 = lasso_path(X, y, 7.0 * w, 3.0 * pf)
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    np.testing.assert_allclose(B1, B2, rtol=1e-9, atol=1e-12)
    Xc = np.column_stack([X, np.full(len(y), 2.0)])
    _, Bc = lasso_path(Xc, y, w, np.r_[pf, 1.0])
    assert np.all(Bc[:, -1] == 0)


def test_bad_input_errors():
    X, y, w, pf = _problem(11, n=50)
    with pytest.raises(MethodError, match="penalty_factor"):
        lasso_path(X, y, w, pf[:-1])
    with pytest.raises(MethodError, match="weights"):
        lasso_path(X, y, -w, pf)
    with pytest.raises(MethodError, match="foldid"):
        cv_lasso(X, y, w, pf, np.zeros(len(y) - 1))
