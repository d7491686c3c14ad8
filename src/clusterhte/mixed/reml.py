"""Linear mixed models with grouped random effects, fitted by REML or ML, vectorised over clusters.

Model (one grouping factor, ``J`` clusters, ``q`` random effects per cluster)::

    y_j = X_j beta + Z_j b_j + e_j,    b_j ~ N(0, G),    e_j ~ N(0, sigma2 I),    G = sigma2 Lambda Lambda'

This is lme4's ``lmer(y ~ X + (Z | g))`` with an unstructured ``q x q`` covariance ``G`` (for
``Z = [1, trt]``: correlated random intercept and slope, ``(trt | g)``), and statsmodels'
``MixedLM(y, X, groups, exog_re=Z)``.

Parametrisation and criterion (as in lme4, Bates et al. 2015, J. Stat. Softw. 67(1), Sec. 3)
--------------------------------------------------------------------------------------------
``Lambda(theta)`` is lower triangular; ``theta`` holds its entries column by column (lme4's
order), diagonal entries bounded below by 0. ``beta`` and ``sigma2`` are profiled out, so the
optimiser only sees ``theta`` (1 parameter for a random intercept, 3 for intercept + slope). With
``M_j = Lambda' Z_j'Z_j Lambda + I`` and ``H = I + Z Lambda Lambda' Z'`` (so ``V = sigma2 H``),
Woodbury gives per cluster ``X_j'H_j^{-1}X_j = X_j'X_j - X_j'Z_j Lambda M_j^{-1} Lambda' Z_j'X_j``
and ``log|H_j| = log|M_j|``. The profiled deviances (``-2 log L``) are::

    REML:  sum_j log|M_j| + log|X'H^{-1}X| + (n-p) [1 + log(2 pi r2 / (n-p))]
    ML:    sum_j log|M_j| +                    n  [1 + log(2 pi r2 / n)]

where ``r2 = min_beta (y - X beta)' H^{-1} (y - X beta)``; ``sigma2 = r2/(n-p)`` (REML) or ``r2/n``
(ML). These are the same log-likelihoods, constants included, as statsmodels' ``MixedLMResults.llf``
and lme4's ``logLik``.

Numerics
--------
Per-cluster sufficient statistics ``Z_j'Z_j``, ``Z_j'[X_j, y_j]`` are computed once (one
``np.add.reduceat`` over rows sorted by cluster); ``X'X``, ``X'y``, ``y'y`` likewise. Each
evaluation is then batched ``q x q`` algebra over the ``J`` clusters plus one ``(p+1) x (p+1)``
Cholesky factorisation (whose last pivot squared is ``r2``). The analytic gradient with respect to
``theta`` is derived in :func:`_deviance`; the optimiser is L-BFGS-B with bounds ``theta_diag >= 0``,
so singular fits (a variance tending to 0, or a correlation tending to +-1) converge to the boundary
instead of failing. Several starting values are tried and the best optimum kept.

Differences from lme4
---------------------
* lme4 optimises with BOBYQA (derivative-free); here L-BFGS-B with the exact gradient. Both find the
  same optimum of the same criterion to optimiser tolerance.
* ``singular`` follows lme4's ``isSingular`` (a diagonal entry of ``Lambda`` below ``1e-4``), plus
  ``|corr| > 1 - 1e-6`` for ``q >= 2``.
* Conditional modes (BLUPs) of clusters that are not in the data are 0 (:meth:`LMMResult.blup_for`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd
from scipy import optimize
from scipy.linalg import solve_triangular

__all__ = ["LMMError", "LMMResult", "fit_lmm", "sufficient_stats"]

SINGULAR_TOL = 1e-4  # lme4::isSingular default tolerance on the diagonal of Lambda
_LOG2PI = float(np.log(2.0 * np.pi))


class LMMError(ValueError):
    """The mixed model cannot be fitted (bad shapes, rank-deficient design, too few rows...)."""


@dataclass
class LMMResult:
    """A fitted linear mixed model.

    beta : (p,) fixed effects (GLS estimate at the optimum).
    cov_beta : (p, p) ``sigma2 (X' H^{-1} X)^{-1}``.
    G : (q, q) random-effects covariance ``sigma2 Lambda Lambda'``.
    sigma2 : residual variance.
    blups : (J, q) conditional modes of the random effects, rows ordered like ``groups_``.
    groups_ : (J,) the sorted unique group labels.
    llf : REML (``reml=True``) or ML log-likelihood at the optimum (statsmodels' ``llf`` scale).
    converged : the optimiser reported convergence (at the best start).
    singular : a variance on the boundary (``Lambda`` diagonal < 1e-4) or ``|corr| ~ 1``.
    theta : lower-triangular entries of ``Lambda`` (column-major, lme4 order).
    n_iter : optimiser iterations at the best start.
    """

    beta: np.ndarray
    cov_beta: np.ndarray
    G: np.ndarray
    sigma2: float
    blups: np.ndarray
    groups_: np.ndarray
    llf: float
    converged: bool
    singular: bool
    theta: np.ndarray
    n_iter: int
    reml: bool = True
    n_obs: int = 0
    message: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def bse(self) -> np.ndarray:
        """Standard errors of the fixed effects."""
        return np.sqrt(np.diag(self.cov_beta))

    @property
    def corr(self) -> np.ndarray:
        """Correlation matrix of the random effects (NaN where a variance is 0)."""
        sd = np.sqrt(np.diag(self.G))
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.G / np.outer(sd, sd)

    def blup_for(self, labels) -> np.ndarray:
        """BLUP rows (len(labels), q) for the given group labels; zeros for labels not fitted."""
        labels = np.asarray(labels)
        idx = pd.Index(self.groups_).get_indexer(labels.ravel())
        out = np.zeros((idx.size, self.blups.shape[1]))
        ok = idx >= 0
        out[ok] = self.blups[idx[ok]]
        return out


# --------------------------------------------------------------------------- sufficient statistics
@dataclass
class _Stats:
    ZtZ: np.ndarray   # (J, q, q)
    ZtW: np.ndarray   # (J, q, p+1), W = [X, y]
    WtW: np.ndarray   # (p+1, p+1)
    n: int
    p: int
    q: int


def sufficient_stats(y, X, codes, Z, J) -> _Stats:
    """Per-cluster cross products ``Z_j'Z_j`` and ``Z_j'[X_j, y_j]`` and the totals ``W'W``."""
    n, p = X.shape
    q = Z.shape[1]
    W = np.column_stack([X, y])
    if np.all(codes[1:] >= codes[:-1]):
        Zs, Ws, cs = Z, W, codes
    else:
        order = np.argsort(codes, kind="stable")
        Zs, Ws, cs = Z[order], W[order], codes[order]
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    prod = Zs[:, :, None] * np.concatenate([Zs, Ws], axis=1)[:, None, :]  # (n, q, q+p+1)
    S = np.add.reduceat(prod, starts, axis=0)
    return _Stats(ZtZ=S[:, :, :q].copy(), ZtW=S[:, :, q:].copy(), WtW=W.T @ W, n=n, p=p, q=q)


_TRIL: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _tril_index(q: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the lower triangle in column-major order (lme4's theta order)."""
    if q not in _TRIL:
        c, r = np.triu_indices(q)
        _TRIL[q] = (r, c)
    return _TRIL[q]


def _lambda(theta: np.ndarray, q: int) -> np.ndarray:
    r, c = _tril_index(q)
    L = np.zeros((q, q))
    L[r, c] = theta
    return L


# --------------------------------------------------------------------------- criterion
@numba.njit(cache=True, inline="always")
def _product(X, Y, out, add):  # pragma: no cover - numba
    """``out = X @ Y`` (``out += X @ Y`` with ``add``), summing over the inner index in order."""
    for a in range(X.shape[0]):
        for b in range(Y.shape[1]):
            acc = 0.0
            for c in range(X.shape[1]):
                acc += X[a, c] * Y[c, b]
            if add:
                out[a, b] += acc
            else:
                out[a, b] = acc


@numba.njit(cache=True)
def _cluster_terms(Lam, ZtZ, ZtW):  # pragma: no cover - numba
    """Per-cluster pieces of the criterion, looped over clusters (tiny q x q algebra).

    Returns (Minv (J,q,q), LtS (J,q,q), sum_j log|M_j|, sum_j LtK_j' M_j^{-1} LtK_j) with
    ``LtS = Lambda' Z_j'Z_j``, ``M_j = LtS Lambda + I``, ``LtK_j = Lambda' Z_j'[X_j, y_j]``.
    """
    J, q, _ = ZtZ.shape
    m1 = ZtW.shape[2]
    Minv = np.empty((J, q, q))
    LtS = np.empty((J, q, q))
    Csub = np.zeros((m1, m1))
    ld = 0.0
    M = np.empty((q, q))
    LtK = np.empty((q, m1))
    P = np.empty((q, m1))
    for j in range(J):
        for a in range(q):
            for b in range(q):
                acc = 0.0
                for c in range(a, q):          # Lambda lower triangular: Lambda'[a, c] = Lam[c, a]
                    acc += Lam[c, a] * ZtZ[j, c, b]
                LtS[j, a, b] = acc
        for a in range(q):
            for b in range(q):
                acc = 0.0
                for c in range(b, q):
                    acc += LtS[j, a, c] * Lam[c, b]
                M[a, b] = acc + (1.0 if a == b else 0.0)
        if q == 1:
            ld += np.log(M[0, 0])
            Minv[j, 0, 0] = 1.0 / M[0, 0]
        elif q == 2:
            det = M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]
            ld += np.log(det)
            Minv[j, 0, 0] = M[1, 1] / det
            Minv[j, 1, 1] = M[0, 0] / det
            Minv[j, 0, 1] = -M[0, 1] / det
            Minv[j, 1, 0] = -M[1, 0] / det
        else:
            ld += np.log(np.linalg.det(M))
            Minv[j] = np.linalg.inv(M)
        for a in range(q):
            for b in range(m1):
                acc = 0.0
                for c in range(a, q):
                    acc += Lam[c, a] * ZtW[j, c, b]
                LtK[a, b] = acc
        _product(Minv[j], LtK, P, False)
        _product(LtK.T, P, Csub, True)
    return Minv, LtS, ld, Csub


@numba.njit(cache=True)
def _gradient_matrix(Lam, Minv, LtS, ZtW, w, kr2, Ainv, use_ainv):  # pragma: no cover - numba
    """``sum_j 2 (M^{-1} Lambda' S - B'T + B'T B Lambda' S)`` with ``B = Lambda M^{-1}``,
    ``e = K w``, ``T = kr2 e e' (+ K_X A^{-1} K_X')`` (see :func:`_deviance`)."""
    J, q, _ = Minv.shape
    p = Ainv.shape[0]
    D = np.zeros((q, q))
    e = np.empty(q)
    T = np.empty((q, q))
    B = np.empty((q, q))
    BtT = np.empty((q, q))
    Qm = np.empty((q, q))
    KA = np.empty((q, p))
    for j in range(J):
        for a in range(q):
            acc = 0.0
            for b in range(ZtW.shape[2]):
                acc += ZtW[j, a, b] * w[b]
            e[a] = acc
        for a in range(q):
            for b in range(q):
                T[a, b] = kr2 * e[a] * e[b]
        if use_ainv:
            _product(ZtW[j, :, :p], Ainv, KA, False)
            _product(KA, ZtW[j, :, :p].T, T, True)
        for a in range(q):
            for b in range(q):
                acc = 0.0
                for c in range(a + 1):       # Lam lower triangular: Lam[a, c] = 0 for c > a
                    acc += Lam[a, c] * Minv[j, c, b]
                B[a, b] = acc
        _product(B.T, T, BtT, False)
        _product(BtT, B, Qm, False)
        for a in range(q):
            for b in range(q):
                acc = 0.0
                for c in range(q):
                    acc += (Minv[j, a, c] + Qm[a, c]) * LtS[j, c, b]
                D[a, b] += 2.0 * (acc - BtT[a, b])
    return D


_LAPACK: dict = {}


def _solve_lower(Rp: np.ndarray, b: np.ndarray, trans: int) -> np.ndarray:
    """``scipy.linalg.solve_triangular(Rp, b, lower=True, trans=trans, check_finite=False)`` for
    a lower-triangular float64 ``Rp``: the same LAPACK ``dtrtrs`` call with the same arguments
    (hence the same floating-point result) without the wrapper's per-call checks, which cost
    more than the solve for the optimiser's (p + 1) x (p + 1) systems."""
    trtrs = _LAPACK.get("trtrs")
    if trtrs is None:
        from scipy.linalg import get_lapack_funcs
        trtrs = _LAPACK["trtrs"] = get_lapack_funcs(("trtrs",), (np.empty((1, 1)),))[0]
    if Rp.shape[0] == 0:
        return np.empty(b.shape)
    if Rp.flags.f_contiguous:
        x, info = trtrs(Rp, b, overwrite_b=False, lower=True, trans=trans, unitdiag=False)
    else:  # as scipy does: the transposed (Fortran-ordered) system
        x, info = trtrs(Rp.T, b, overwrite_b=False, lower=False, trans=not trans, unitdiag=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"triangular solve failed (LAPACK info {info})")
    return x


_EYE: dict[int, np.ndarray] = {}


def _eye(p: int) -> np.ndarray:
    e = _EYE.get(p)
    if e is None:
        e = _EYE[p] = np.eye(p)
        e.setflags(write=False)
    return e


def _deviance(theta: np.ndarray, st: _Stats, reml: bool, grad: bool = True, full: bool = False):
    """Profiled deviance ``-2 log L(theta)`` and its gradient (or the full solution if ``full``).

    Gradient (for each cluster, ``S = Z_j'Z_j``, ``K = Z_j'[X_j, y_j]``, ``B = Lambda M^{-1}``,
    ``w = (-beta, 1)``, ``e = K w = Z_j'(y_j - X_j beta)``, ``H = K_X A^{-1} K_X'`` with
    ``A = X'H^{-1}X`` (REML only), ``T = H + (k/r2) e e'``, ``Q = B'TB``)::

        d dev / d Lambda = sum_j 2 (M^{-1} Lambda' S - B'T + Q Lambda' S)'

    from ``d log|M| = 2 tr(M^{-1} Lambda' S dLambda)``, ``d r2 = w' dC w``,
    ``d log|A| = tr(A^{-1} dA)`` and ``dC = -sum_j K' d(Lambda M^{-1} Lambda') K``.
    The per-cluster sums run in compiled loops (:func:`_cluster_terms`, :func:`_gradient_matrix`);
    :func:`_deviance_numpy` is the same computation in batched numpy (tests compare the two).
    """
    if full:
        return _deviance_numpy(theta, st, reml, grad=grad, full=True)
    q, p, n = st.q, st.p, st.n
    Lam = _lambda(np.asarray(theta, dtype=float), q)
    Minv, LtS, ld_M, Csub = _cluster_terms(Lam, st.ZtZ, st.ZtW)
    C = st.WtW - Csub
    C = 0.5 * (C + C.T)
    try:
        R = np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        return (np.inf, np.zeros_like(theta)) if grad else np.inf
    dR = np.diag(R)
    r2 = dR[p] ** 2
    if not np.isfinite(r2) or r2 <= 0 or not np.isfinite(ld_M):
        return (np.inf, np.zeros_like(theta)) if grad else np.inf
    k = n - p if reml else n
    ld_A = 2.0 * float(np.sum(np.log(dR[:p])))
    dev = ld_M + k * (1.0 + _LOG2PI + np.log(r2 / k))
    if reml:
        dev += ld_A
    if not grad:
        return dev
    Rp = R[:p, :p]
    beta = _solve_lower(Rp, R[p, :p], 1)
    w = np.empty(p + 1)
    w[:p] = -beta
    w[p] = 1.0
    use_ainv = bool(reml and p)
    if use_ainv:
        Rinv = _solve_lower(Rp, _eye(p), 0)
        Ainv = Rinv.T @ Rinv
    else:
        Ainv = np.zeros((p, p))
    D = _gradient_matrix(Lam, Minv, LtS, st.ZtW, w, k / r2, Ainv, use_ainv)
    r, c = _tril_index(q)
    return dev, D.T[r, c]


# --------------------------------------------------------------------------- criterion
def _deviance_numpy(theta: np.ndarray, st: _Stats, reml: bool, grad: bool = True, full: bool = False):
    """Batched-numpy form of :func:`_deviance` (the reference its compiled loops are tested against).

    Profiled deviance ``-2 log L(theta)`` and its gradient (or the full solution if ``full``).

    Gradient (for each cluster, ``S = Z_j'Z_j``, ``K = Z_j'[X_j, y_j]``, ``B = Lambda M^{-1}``,
    ``w = (-beta, 1)``, ``e = K w = Z_j'(y_j - X_j beta)``, ``H = K_X A^{-1} K_X'`` with
    ``A = X'H^{-1}X`` (REML only), ``T = H + (k/r2) e e'``, ``Q = B'TB``)::

        d dev / d Lambda = sum_j 2 (M^{-1} Lambda' S - B'T + Q Lambda' S)'

    from ``d log|M| = 2 tr(M^{-1} Lambda' S dLambda)``, ``d r2 = w' dC w``,
    ``d log|A| = tr(A^{-1} dA)`` and ``dC = -sum_j K' d(Lambda M^{-1} Lambda') K``.
    """
    q, p, n = st.q, st.p, st.n
    Lam = _lambda(theta, q)
    LtS = Lam.T @ st.ZtZ                              # (J, q, q)
    M = LtS @ Lam + np.eye(q)                         # (J, q, q)
    if q == 1:
        m = M[:, 0, 0]
        Minv = (1.0 / m)[:, None, None]
        ld_M = float(np.sum(np.log(m)))
    elif q == 2:
        a, b, d = M[:, 0, 0], M[:, 0, 1], M[:, 1, 1]
        det = a * d - b * b
        Minv = np.empty_like(M)
        Minv[:, 0, 0] = d / det
        Minv[:, 1, 1] = a / det
        Minv[:, 0, 1] = Minv[:, 1, 0] = -b / det
        ld_M = float(np.sum(np.log(det)))
    else:
        Minv = np.linalg.inv(M)
        ld_M = float(np.sum(np.linalg.slogdet(M)[1]))
    LtK = Lam.T @ st.ZtW                              # (J, q, p+1)
    P = Minv @ LtK
    C = st.WtW - LtK.reshape(-1, p + 1).T @ P.reshape(-1, p + 1)
    C = 0.5 * (C + C.T)
    try:
        R = np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        return (np.inf, np.zeros_like(theta)) if grad else np.inf
    dR = np.diag(R)
    r2 = dR[p] ** 2
    if not np.isfinite(r2) or r2 <= 0:
        return (np.inf, np.zeros_like(theta)) if grad else np.inf
    k = n - p if reml else n
    ld_A = 2.0 * float(np.sum(np.log(dR[:p])))
    dev = ld_M + k * (1.0 + _LOG2PI + np.log(r2 / k))
    if reml:
        dev += ld_A
    if not grad and not full:
        return dev
    # beta from the Cholesky factor of A = C[:p, :p]
    Rp = R[:p, :p]
    beta = solve_triangular(Rp, R[p, :p], trans="T", lower=True, check_finite=False)
    w = np.r_[-beta, 1.0]
    e = st.ZtW @ w                                    # (J, q) = Z_j'(y_j - X_j beta)
    B = Lam[None] @ Minv                              # (J, q, q)
    if full:
        Ainv = np.linalg.inv(Rp @ Rp.T) if p else np.zeros((0, 0))
        b = np.einsum("jab,jb->ja", B @ Lam.T[None], e)  # Lambda M^{-1} Lambda' e
        return dict(dev=dev, beta=beta, Ainv=Ainv, r2=r2, k=k, blups=b, Lam=Lam)
    T = (k / r2) * (e[:, :, None] * e[:, None, :])
    if reml and p:
        KX = st.ZtW[:, :, :p]                         # (J, q, p)
        Y = solve_triangular(Rp, KX.reshape(-1, p).T, lower=True, check_finite=False)
        Y = Y.T.reshape(KX.shape)                     # (J, q, p): K_X R^{-T}
        T = T + Y @ Y.transpose(0, 2, 1)              # K_X A^{-1} K_X'
    Q = B.transpose(0, 2, 1) @ T @ B
    D = 2.0 * np.sum(Minv @ LtS - B.transpose(0, 2, 1) @ T + Q @ LtS, axis=0)
    gmat = D.T
    r, c = _tril_index(q)
    return dev, gmat[r, c]


# --------------------------------------------------------------------------- fitting
def _as_2d(a, n, name) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n:
        raise LMMError(f"{name} must have {n} rows (like y), got shape {np.shape(a)}")
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))[:5]
        raise LMMError(f"{name} has missing or infinite values in rows {bad.tolist()}")
    return a


def _starts(q: int) -> list[np.ndarray]:
    """Starting values: lme4's (identity Lambda), then a smaller and a larger scale."""
    r, c = _tril_index(q)
    diag = (r == c).astype(float)
    return [diag * s for s in (1.0, 0.2, 3.0)]


_LBFGSB_OPTIONS = dict(ftol=1e-13, gtol=1e-7, maxls=50)


def _lbfgsb(st: _Stats, reml: bool, th0: np.ndarray, bounds, maxiter: int,
            direct: bool | None = None) -> dict:
    """L-BFGS-B from ``th0`` (``scipy.optimize.minimize(method="L-BFGS-B")`` with
    :data:`_LBFGSB_OPTIONS`). With ``direct`` (default: when scipy's L-BFGS-B is the version
    :func:`_lbfgsb_loop` follows) the same iteration runs without minimize's wrappers."""
    if direct is None:
        direct = _LBFGSB_LOOP_OK
    if direct:
        return _lbfgsb_loop(lambda th: _deviance(th, st, reml), th0, bounds, maxiter, **_LBFGSB_OPTIONS)
    res = optimize.minimize(_deviance, th0, args=(st, reml), jac=True, method="L-BFGS-B",
                            bounds=bounds, options=dict(maxiter=maxiter, **_LBFGSB_OPTIONS))
    return dict(x=np.asarray(res.x, dtype=float), fun=float(res.fun), success=bool(res.success),
                nit=int(res.nit), message=str(res.message))


def _scipy_version() -> tuple[int, int]:
    import scipy
    try:
        return tuple(int(v) for v in scipy.__version__.split(".")[:2])
    except ValueError:
        return (0, 0)


# scipy 1.15 replaced the Fortran L-BFGS-B by a C translation with the setulb interface that
# _lbfgsb_loop calls; checked against scipy 1.16 (tests: the same iterates as minimize).
_LBFGSB_LOOP_OK = (1, 15) <= _scipy_version() < (1, 17)


def _lbfgsb_loop(fun, x0, bounds, maxiter: int, ftol: float, gtol: float, maxls: int,
                 maxcor: int = 10, maxfun: int = 15000) -> dict:
    """The loop of scipy's ``_minimize_lbfgsb`` (scipy 1.15-1.16) for ``fun(x) -> (f, g)``: the
    same calls of the compiled ``setulb`` with the same arguments, so the same iterates, without
    the per-evaluation wrappers of ``minimize`` (which cost about as much as the REML criterion
    itself for a (150, 25) replicate). ``bounds``: (low, high) pairs, None for no bound."""
    from scipy.optimize import _lbfgsb

    x0 = np.asarray(x0).ravel()
    n = x0.size
    low = np.array([-np.inf if b[0] is None else b[0] for b in bounds], dtype=float)
    high = np.array([np.inf if b[1] is None else b[1] for b in bounds], dtype=float)
    x0 = np.clip(x0, low, high)
    nbd = np.zeros(n, np.int32)
    low_bnd = np.zeros(n, np.float64)
    upper_bnd = np.zeros(n, np.float64)
    for i in range(n):
        has_l, has_u = not np.isinf(low[i]), not np.isinf(high[i])
        if has_l:
            low_bnd[i] = low[i]
        if has_u:
            upper_bnd[i] = high[i]
        nbd[i] = {(False, False): 0, (True, False): 1, (True, True): 2, (False, True): 3}[has_l, has_u]
    # minimize evaluates at (a float copy of) x0 first and reuses a result while x is unchanged
    cur_x = x0.astype(np.float64)
    cur_f, cur_g = fun(np.copy(cur_x))
    cur_g = np.atleast_1d(cur_g)
    nfev = 1
    factr = ftol / np.finfo(float).eps
    x = np.array(x0, dtype=np.float64)
    f = np.array(0.0, dtype=np.float64)
    g = np.zeros((n,), dtype=np.float64)
    m = maxcor
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
    iwa = np.zeros(3 * n, dtype=np.int32)
    task = np.zeros(2, dtype=np.int32)
    ln_task = np.zeros(2, dtype=np.int32)
    lsave = np.zeros(4, dtype=np.int32)
    isave = np.zeros(44, dtype=np.int32)
    dsave = np.zeros(29, dtype=np.float64)
    nit = 0
    while True:
        g = g.astype(np.float64)
        _lbfgsb.setulb(m, x, low_bnd, upper_bnd, nbd, f, g, factr, gtol, wa, iwa, task, lsave, isave,
                       dsave, maxls, ln_task)
        if task[0] == 3:
            if not np.array_equal(x, cur_x):
                cur_x = x.astype(np.float64)
                cur_f, cur_g = fun(np.copy(cur_x))
                cur_g = np.atleast_1d(cur_g)
                nfev += 1
            f, g = cur_f, cur_g
        elif task[0] == 1:
            nit += 1
            if nit >= maxiter:
                task[0], task[1] = 5, 504
            elif nfev > maxfun:
                task[0], task[1] = 5, 502
        else:
            break
    from scipy.optimize._lbfgsb_py import status_messages, task_messages
    return dict(x=np.asarray(x, dtype=float), fun=float(f), success=bool(task[0] == 4), nit=int(nit),
                message=status_messages[task[0]] + ": " + task_messages[task[1]])


def _scalar(st: _Stats, reml: bool, maxiter: int) -> dict:
    """Random intercept only (one theta): root of the gradient by Brent's method.

    The deviance is even in theta, so its gradient vanishes at 0; the sign of ``g(t)/t`` for a tiny
    ``t`` tells whether the variance is on the boundary (minimum at 0) or increases away from it.
    A sign change is bracketed by quadrupling the upper end (the deviance tends to infinity as
    theta grows, since ``log|M_j|`` grows like ``2 log theta``).
    """
    def g(t):
        return _deviance(np.array([t]), st, reml)[1][0]

    lo = 1e-6
    if not g(lo) < 0:
        f0 = _deviance(np.zeros(1), st, reml, grad=False)
        return dict(x=np.zeros(1), fun=float(f0), success=True, nit=1,
                    message="variance on the boundary (gradient >= 0 at 0)")
    hi, k = 1.0, 0
    while g(hi) < 0:
        lo, hi, k = hi, 4.0 * hi, k + 1
        if k > 30:
            return dict(x=np.array([hi]), fun=float(_deviance(np.array([hi]), st, reml, grad=False)),
                        success=False, nit=k, message="no upper bracket for theta")
    t, info = optimize.brentq(g, lo, hi, xtol=1e-14, rtol=1e-12, maxiter=maxiter, full_output=True,
                              disp=False)
    return dict(x=np.array([t]), fun=float(_deviance(np.array([t]), st, reml, grad=False)),
                success=bool(info.converged), nit=int(info.iterations) + k,
                message=str(info.flag))


def _escape_boundary(best: dict, st: _Stats, reml: bool, bounds, maxiter: int, rounds: int = 3) -> list:
    """Leave a saddle point on the boundary.

    The deviance depends on ``Lambda`` only through ``Lambda Lambda'``, so it is even in each
    column's sign and its partial derivative in a diagonal entry vanishes at 0: a gradient method
    can stop at ``theta_kk = 0`` although the deviance decreases away from it (lme4's
    derivative-free BOBYQA does not have this problem). For each zero diagonal entry, step it to
    ``0.01``, ``0.1`` and ``0.5``; if the deviance drops, restart L-BFGS-B from there.
    """
    q = st.q
    r, c = _tril_index(q)
    diag = np.flatnonzero(r == c)
    out = []
    for _ in range(rounds):
        x = best["x"]
        zero = [k for k in diag if x[k] < SINGULAR_TOL]
        moved = None
        for k in zero:
            for step in (0.01, 0.1, 0.5):
                x1 = x.copy()
                x1[k] = step
                if _deviance(x1, st, reml, grad=False) < best["fun"] - 1e-10:
                    moved = x1
                    break
            if moved is not None:
                break
        if moved is None:
            break
        res = _lbfgsb(st, reml, moved, bounds, maxiter)
        out.append(res)
        if not res["fun"] < best["fun"]:
            break
        best = res
    return out


def fit_lmm(y, X, groups, Z=None, *, reml: bool = True, starts=None, maxiter: int = 500) -> LMMResult:
    """Fit ``y = X beta + Z b_g + e`` by REML (default) or ML.

    Parameters
    ----------
    y : (n,) outcome.
    X : (n, p) fixed-effects design; include the intercept column yourself.
    groups : (n,) group labels (any hashable values).
    Z : (n, q) random-effects design; ``None`` = random intercept only (a column of ones). For
        ``q >= 2`` the ``q x q`` covariance is unstructured (lme4 ``(z | g)``).
    reml : REML (True, lme4's and statsmodels' default) or ML.
    starts : optional list of starting ``theta`` vectors (length ``q(q+1)/2``, column-major).
    maxiter : L-BFGS-B iteration limit per start.
    """
    y = np.asarray(y, dtype=float).ravel()
    n = y.size
    if not np.all(np.isfinite(y)):
        raise LMMError(f"y has missing or infinite values in rows {np.flatnonzero(~np.isfinite(y))[:5].tolist()}")
    X = _as_2d(X, n, "X")
    Z = np.ones((n, 1)) if Z is None else _as_2d(Z, n, "Z")
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise LMMError(f"groups must have shape ({n},) like y, got {groups.shape}")
    codes, labels = pd.factorize(groups, sort=True)
    if np.any(codes < 0):
        raise LMMError(f"groups has missing labels in rows {np.flatnonzero(codes < 0)[:5].tolist()}")
    J = labels.size
    p, q = X.shape[1], Z.shape[1]
    if J < 2:
        raise LMMError(f"need at least 2 groups for a random effect, got {J}")
    if n - p <= 0:
        raise LMMError(f"need more rows ({n}) than fixed effects ({p})")

    st = sufficient_stats(y, X, codes, Z, J)
    if p:
        xtx = st.WtW[:p, :p]
        d = np.sqrt(np.diag(xtx))
        zero = np.flatnonzero(d == 0)
        if zero.size:
            raise LMMError(f"X column(s) {zero.tolist()} are all zero")
        ev = np.linalg.eigvalsh(xtx / np.outer(d, d))
        if ev[0] <= 1e-11 * ev[-1]:
            raise LMMError(f"X is rank deficient (or nearly: condition {ev[-1] / max(ev[0], 1e-300):.2e}); "
                           "drop collinear columns")
    r, c = _tril_index(q)
    bounds = [(0.0, None) if i == j else (None, None) for i, j in zip(r, c)]
    cands = []
    if starts is None:
        # lme4's start (or the exact 1-d solver); more starts only when that fit is doubtful:
        # all of them if it did not converge, one from a larger scale if it is on the boundary
        s0 = _starts(q)
        cands.append(_scalar(st, reml, maxiter) if q == 1 else _lbfgsb(st, reml, s0[0], bounds, maxiter))
        first = cands[0]
        if not first["success"] or not np.isfinite(first["fun"]):
            extra = s0[1:] if q > 1 else s0
        elif np.any(first["x"][r == c] < SINGULAR_TOL):
            extra = s0[1:2]
        else:
            extra = []
        cands += [_lbfgsb(st, reml, th0, bounds, maxiter) for th0 in extra]
        if q > 1:
            cands += _escape_boundary(min(cands, key=lambda d: d["fun"]), st, reml, bounds, maxiter)
    else:
        for th0 in starts:
            th0 = np.asarray(th0, dtype=float)
            if th0.shape != (r.size,):
                raise LMMError(f"starting theta must have length {r.size}, got {th0.shape}")
            cands.append(_lbfgsb(st, reml, th0, bounds, maxiter))
    cands = [d for d in cands if np.isfinite(d["fun"])]
    if not cands:
        raise LMMError("the mixed-model criterion is not finite at any starting value")
    fmin = min(d["fun"] for d in cands)
    # among (near-)ties prefer a converged run
    best = min(cands, key=lambda d: (d["fun"] > fmin + 1e-8, not d["success"], d["fun"]))

    theta = np.array(best["x"], dtype=float)
    theta[(r == c) & (theta < 0)] = 0.0
    sol = _deviance(theta, st, reml, grad=False, full=True)
    if not isinstance(sol, dict):          # the criterion is not finite at the optimum
        raise LMMError("the criterion is not finite at its optimum (the fixed effects fit y exactly, "
                       "or X'X is numerically singular)")
    sigma2 = float(sol["r2"] / sol["k"])
    Lam = sol["Lam"]
    G = sigma2 * (Lam @ Lam.T)
    singular = bool(np.any(np.abs(theta[r == c]) < SINGULAR_TOL))
    if q >= 2 and not singular:
        sd = np.sqrt(np.diag(G))
        cor = G / np.outer(sd, sd)
        singular = bool(np.any(np.abs(cor[np.tril_indices(q, -1)]) > 1 - 1e-6))
    return LMMResult(
        beta=sol["beta"], cov_beta=sigma2 * sol["Ainv"], G=G, sigma2=sigma2, blups=sol["blups"],
        groups_=np.asarray(labels), llf=-0.5 * float(sol["dev"]), converged=bool(best["success"]),
        singular=singular, theta=theta, n_iter=int(best["nit"]), reml=reml, n_obs=n,
        message=str(best["message"]))
