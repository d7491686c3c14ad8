"""B-spline and P-spline bases shared by the additive CRT estimators (mermboost, GAMM), and the
restricted cubic splines of the LMM's ``spline_knots`` option.

A P-spline (Eilers & Marx 1996) is a B-spline basis on equally spaced knots with a difference
penalty on neighbouring coefficients, ``lambda * ||D_d beta||^2``. Two users:

* mermboost's ``bbs`` base-learner (R ``mboost::bbs``: cubic, 20 inner knots, second-order
  differences, smoothing fixed by its degrees of freedom ``df = tr(2S - S'S)``, mboost's default
  ``options(mboost_dftraceS = FALSE)``);
* GAMM's smooth terms (R ``mgcv`` ``s(x, bs = "ps", k = 6)``: ``k`` cubic B-splines, second-order
  difference penalty, centred by a sum-to-zero constraint).

Differences from the R originals
--------------------------------
* Knots are placed equally spaced over ``[min(x), max(x)]`` of the training data (mboost does the
  same; mgcv's ``ps`` basis spreads its outer knots slightly beyond the range).
* Outside the training range the basis is extended *linearly* (value and slope at the boundary),
  so predictions for new clusters with extreme covariates stay finite and tame; mboost warns and
  mgcv extrapolates the polynomial pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import BSpline


def difference_matrix(k: int, order: int = 2) -> np.ndarray:
    """The ``(k - order) x k`` matrix of ``order``-th differences of ``k`` coefficients."""
    if order < 0 or order >= k:
        raise ValueError(f"difference order {order} must be in [0, {k - 1}] for {k} coefficients")
    return np.diff(np.eye(k), n=order, axis=0)


def difference_penalty(k: int, order: int = 2) -> np.ndarray:
    """``D'D`` for the ``order``-th difference matrix ``D`` of ``k`` coefficients."""
    D = difference_matrix(k, order)
    return D.T @ D


@dataclass
class BSplineBasis:
    """A B-spline basis of ``degree`` on ``n_inner`` equally spaced inner knots over the training range.

    The number of basis functions is ``n_inner + degree + 1``. Call :meth:`fit` with the training
    values, then :meth:`transform` for any values (linear extension outside the range).
    """

    n_inner: int = 20
    degree: int = 3

    def fit(self, x: np.ndarray) -> "BSplineBasis":
        x = np.asarray(x, dtype=float).ravel()
        lo, hi = float(np.min(x)), float(np.max(x))
        if not hi > lo:
            raise ValueError("a spline basis needs a covariate with at least two distinct values")
        if self.n_inner < 0 or self.degree < 1:
            raise ValueError(f"need n_inner >= 0 and degree >= 1, got {self.n_inner}, {self.degree}")
        h = (hi - lo) / (self.n_inner + 1)
        # equally spaced knots, extended by `degree` knots beyond each boundary (P-spline style)
        self.knots_ = lo + h * np.arange(-self.degree, self.n_inner + self.degree + 2)
        self.lo_, self.hi_ = lo, hi
        k = self.n_basis
        self._spline = BSpline(self.knots_, np.eye(k), self.degree, extrapolate=True)
        self._deriv = self._spline.derivative()
        return self

    @property
    def n_basis(self) -> int:
        return self.n_inner + self.degree + 1

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(n, n_basis)`` design matrix; linear extension of every basis function outside the range."""
        x = np.asarray(x, dtype=float).ravel()
        xc = np.clip(x, self.lo_, self.hi_)
        B = self._spline(xc)
        out = (x < self.lo_) | (x > self.hi_)
        if out.any():
            xb = xc[out]
            B[out] += (x[out] - xb)[:, None] * self._deriv(xb)
        return np.ascontiguousarray(B)


def smoother_eigenvalues(X: np.ndarray, P: np.ndarray, ridge: float = 1e-10) -> np.ndarray:
    """Eigenvalues ``s`` of ``R^{-T} P R^{-1}`` with ``X'X = R'R``: the hat matrix of the penalised
    least-squares fit ``X (X'X + lam P)^{-1} X'`` has non-zero eigenvalues ``1 / (1 + lam s)``.
    A tiny ridge is added when ``X'X`` is singular (a basis function with no data, e.g. in by-learners)."""
    XtX = X.T @ X
    try:
        R = np.linalg.cholesky(XtX).T
    except np.linalg.LinAlgError:
        XtX = XtX + ridge * max(np.trace(XtX) / XtX.shape[0], 1.0) * np.eye(XtX.shape[0])
        R = np.linalg.cholesky(XtX).T
    Rinv = np.linalg.inv(R)
    M = Rinv.T @ P @ Rinv
    return np.clip(np.linalg.eigvalsh((M + M.T) / 2), 0.0, None)


def df_of_lambda(s: np.ndarray, lam: float, trace_s: bool = False) -> float:
    """Degrees of freedom of a penalised fit with eigenvalues ``s`` (see :func:`smoother_eigenvalues`):
    ``tr(2S - S'S)`` (mboost default) or ``tr(S)`` when ``trace_s``."""
    d = 1.0 / (1.0 + lam * s)
    return float(d.sum() if trace_s else (2 * d - d * d).sum())


def lambda_for_df(X: np.ndarray, P: np.ndarray, df: float, trace_s: bool = False) -> float:
    """The penalty ``lambda`` giving a penalised least-squares fit ``df`` degrees of freedom.

    ``df`` must lie between the dimension of the penalty's null space (``lambda -> inf``) and the
    number of columns (``lambda = 0``). Solved by bisection on ``log(lambda)``.
    """
    s = smoother_eigenvalues(X, P)
    k = X.shape[1]
    null_dim = k - int(np.linalg.matrix_rank(P))
    if df >= k - 1e-9:
        return 0.0
    if df <= null_dim + 1e-6:
        raise ValueError(f"df = {df} is not above the penalty's null-space dimension {null_dim}")
    lo, hi = -30.0, 30.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if df_of_lambda(s, np.exp(mid), trace_s) > df:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return float(np.exp(0.5 * (lo + hi)))


def sum_to_zero_constraint(X: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``(k, k-1)`` matrix ``Z`` whose columns span ``{beta : sum_i w_i (X beta)_i = 0}``.

    Reparametrising a smooth's basis as ``X Z`` (penalty ``Z'SZ``) centres the smooth over the
    (weighted) training rows, as mgcv's identifiability constraint does.
    """
    c = (X if weights is None else X * np.asarray(weights, dtype=float)[:, None]).sum(axis=0)
    q, _ = np.linalg.qr(c[:, None], mode="complete")
    return q[:, 1:]


# Harrell's default knot quantiles (rms::rcspline.eval, n >= 100) by number of knots
RCS_QUANTILES = {3: (0.10, 0.50, 0.90), 4: (0.05, 0.35, 0.65, 0.95), 5: (0.05, 0.275, 0.50, 0.725, 0.95),
                 6: (0.05, 0.23, 0.41, 0.59, 0.77, 0.95),
                 7: (0.025, 0.1833, 0.3417, 0.50, 0.6583, 0.8167, 0.975)}


def rcs_knots(x: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` knots of a restricted cubic spline of ``x``: Harrell's quantiles (R type 7)."""
    if k not in RCS_QUANTILES:
        raise ValueError(f"restricted cubic splines take 3-7 knots, got {k!r}")
    t = np.quantile(np.asarray(x, dtype=float), RCS_QUANTILES[k])
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"the {k} knot quantiles of the covariate are not distinct ({np.round(t, 6).tolist()})")
    return t


def rcs_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """The ``k - 2`` nonlinear terms of the restricted cubic spline with ``knots`` (Harrell's
    ``rcspline.eval(x, knots, norm = 2)``): cubic between the knots, linear beyond the outer ones;
    with ``x`` itself they span the natural cubic splines with these knots."""
    x = np.asarray(x, dtype=float)[:, None]
    t = np.asarray(knots, dtype=float)
    k = t.size
    p3 = lambda u: np.maximum(u, 0.0) ** 3  # noqa: E731
    tj = t[None, :k - 2]
    out = (p3(x - tj) - p3(x - t[k - 2]) * (t[k - 1] - tj) / (t[k - 1] - t[k - 2])
           + p3(x - t[k - 1]) * (t[k - 2] - tj) / (t[k - 1] - t[k - 2]))
    return out / (t[k - 1] - t[0]) ** 2
