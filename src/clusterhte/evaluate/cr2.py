"""Cluster-robust OLS inference for few clusters: the CR2 covariance with Satterthwaite df.

Estimand: for OLS ``y = X b + e`` with errors correlated within clusters, the covariance of
``b_hat`` and t-tests of linear contrasts ``c'b`` that keep their level with 20-60 clusters.

Follows Bell & McCaffrey (2002) and Pustejovsky & Tipton (2018, JBES), as implemented in the R
package clubSandwich (``vcovCR(fit, cluster, type = "CR2")`` and
``coef_test(fit, vcov = "CR2", test = "Satterthwaite")`` for an ``lm`` fit, whose working model is
the identity):

- bias-reduced linearisation: ``V = M (sum_j X_j' A_j e_j e_j' A_j X_j) M`` with
  ``M = (X'X)^{-1}`` and ``A_j = (I - H_jj)^{-1/2}`` (symmetric square root; a Moore-Penrose
  inverse where a cluster has leverage 1, as clubSandwich does), ``H_jj = X_j M X_j'``;
- Satterthwaite degrees of freedom of ``c'V c`` under the working model (independent homoskedastic
  errors): with ``g_j = (I - H)_{.,j} A_j X_j M c``, ``df = (sum_j g_j'g_j)^2 / sum_ij (g_i'g_j)^2``.

Differences from clubSandwich: only unweighted OLS (the working model is the identity, which is
clubSandwich's default for ``lm``); no fixed-effects absorption. Numerics are vectorised over
clusters: ``f(I - Z Z')`` for ``Z = X_j M^{1/2}`` (rank <= p) is computed from the p x p
eigen-decomposition of ``Z'Z``, so no n_j x n_j matrix is ever formed. Reference values from R
(clubSandwich 0.5) are test fixtures in ``tests/test_cr2.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["CR2Fit", "cr2_ols"]


def _segment_sum(values: np.ndarray, codes: np.ndarray, J: int) -> np.ndarray:
    """Sum of the rows of ``values`` (n x k) within each cluster: (J x k)."""
    out = np.zeros((J,) + values.shape[1:])
    np.add.at(out, codes, values)
    return out


@dataclass
class CR2Fit:
    """An OLS fit with its CR2 covariance. ``coef`` (p,), ``vcov`` (p, p), ``n_clusters``."""

    coef: np.ndarray
    vcov: np.ndarray
    n_clusters: int
    _M: np.ndarray
    _X: np.ndarray
    _AX: np.ndarray
    _codes: np.ndarray

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.vcov), 0, None))

    def df(self, c: np.ndarray) -> float:
        """Satterthwaite (Bell-McCaffrey) degrees of freedom of the contrast ``c'b``."""
        c = np.asarray(c, dtype=float)
        J = self.n_clusters
        u = self._AX @ (self._M @ c)                       # A_j X_j M c, stacked over rows
        uu = _segment_sum(u * u, self._codes, J)           # ||u_j||^2
        W = _segment_sum(self._X * u[:, None], self._codes, J)  # X_j' u_j   (J x p)
        GtG = np.diag(uu) - W @ self._M @ W.T             # G'G with G = (I - H) S
        tr = np.trace(GtG)
        ss = float(np.sum(GtG * GtG))
        return float(tr * tr / ss) if ss > 0 else np.nan

    def test(self, c, null: float = 0.0, alternative: str = "two-sided") -> dict:
        """t-test of ``c'b = null`` with CR2 SE and Satterthwaite df.

        ``alternative``: ``"two-sided"``, ``"greater"`` (H1: c'b > null) or ``"less"``.
        Returns estimate, se, df, t, p_value.
        """
        c = np.asarray(c, dtype=float)
        est = float(c @ self.coef)
        se = float(np.sqrt(max(c @ self.vcov @ c, 0.0)))
        df = self.df(c)
        t = (est - null) / se if se > 0 else np.nan
        if alternative == "two-sided":
            p = 2 * stats.t.sf(abs(t), df)
        elif alternative == "greater":
            p = stats.t.sf(t, df)
        elif alternative == "less":
            p = stats.t.cdf(t, df)
        else:
            raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
        return {"estimate": est, "se": se, "df": df, "t": t, "p_value": float(p)}

    def interval(self, c, level: float = 0.95) -> tuple[float, float, float, float, float]:
        """(estimate, se, df, lower, upper): t interval on the Satterthwaite df."""
        r = self.test(c)
        q = stats.t.ppf(0.5 + level / 2, r["df"]) if np.isfinite(r["df"]) else np.nan
        return r["estimate"], r["se"], r["df"], r["estimate"] - q * r["se"], r["estimate"] + q * r["se"]


def cr2_ols(y, X, cluster, tol: float = 1e-10) -> CR2Fit:
    """OLS of ``y`` on ``X`` (include the intercept column yourself) with the CR2 covariance.

    ``cluster``: one label per row. Raises ValueError for rank-deficient ``X``, fewer than 2
    clusters, or non-finite values.
    """
    y = np.asarray(y, dtype=float).ravel()
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    n, p = X.shape
    if y.shape[0] != n:
        raise ValueError(f"cr2_ols: y has {y.shape[0]} rows, X has {n}")
    if not (np.isfinite(y).all() and np.isfinite(X).all()):
        raise ValueError("cr2_ols: y and X must be finite")
    codes = pd.factorize(np.asarray(cluster), sort=True)[0]
    J = int(codes.max()) + 1 if n else 0
    if J < 2:
        raise ValueError(f"cr2_ols: need at least 2 clusters, got {J}")
    XtX = X.T @ X
    if np.linalg.matrix_rank(XtX) < p:
        raise ValueError("cr2_ols: the design matrix is rank deficient (a constant or collinear column)")
    M = np.linalg.inv(XtX)
    M = (M + M.T) / 2
    coef = M @ (X.T @ y)
    e = y - X @ coef
    # M^{1/2} and, per cluster, the eigen-decomposition of Z_j'Z_j = M^{1/2} X_j'X_j M^{1/2}
    lam_m, Q_m = np.linalg.eigh(M)
    Mh = (Q_m * np.sqrt(np.clip(lam_m, 0, None))) @ Q_m.T
    Z = X @ Mh                                               # rows of Z_j = X_j M^{1/2}
    ZtZ = _segment_sum(Z[:, :, None] * Z[:, None, :], codes, J)   # (J, p, p)
    lam, Q = np.linalg.eigh(ZtZ)                             # eigenvalues of H_jj's nonzero part
    one_minus = 1.0 - lam
    # f(1 - lam) with f(x) = x^{-1/2}, pseudo-inverse where x ~ 0, and (f - 1)/lam on lam > 0
    f = np.where(one_minus > tol, 1.0 / np.sqrt(np.clip(one_minus, tol, None)), 0.0)
    coefs = np.where(lam > tol, (f - 1.0) / np.where(lam > tol, lam, 1.0), 0.0)
    K = np.einsum("jab,jb,jcb->jac", Q, coefs, Q)            # A_j = I + Z_j K_j Z_j'

    def apply_A(V: np.ndarray) -> np.ndarray:
        """A_j V_j for every cluster, V stacked over rows (n x k)."""
        ZtV = _segment_sum(Z[:, :, None] * V[:, None, :], codes, J)   # (J, p, k)
        KZtV = np.einsum("jab,jbk->jak", K, ZtV)
        return V + np.einsum("na,nak->nk", Z, KZtV[codes])

    AX = apply_A(X)
    s = _segment_sum(AX * e[:, None], codes, J)              # X_j' A_j e_j  (J x p)
    V = M @ (s.T @ s) @ M
    return CR2Fit(coef=coef, vcov=(V + V.T) / 2, n_clusters=J, _M=M, _X=X, _AX=AX, _codes=codes)
