"""glmnet's weighted gaussian lasso without intercept, and its cross-validation (`cv.glmnet`).

This is the numerical core of the weighting estimators (W-*, WS-*, paper Suk & Park 2023,
Section 4), which call ``personalized::fit.subgroup(loss = "sq_loss_lasso")`` and through it
``cv.glmnet(x, y, weights, family = "gaussian", intercept = FALSE, penalty.factor, foldid)``.
It follows glmnet 4.1 (Fortran ``standard`` + ``elnet1``, the "covariance" algorithm, and the R
wrappers ``glmnet``/``cv.glmnet``/``getOptcv.glmnet``):

* objective, on the original scale, with weights ``w`` normalised to sum 1::

      1/2 * sum_i w_i (y_i - offset_i - x_i' beta)^2 + lambda * sum_j vp_j * s_j * |beta_j|

  where ``vp`` are the penalty factors rescaled to sum to ``p`` (entries <= 0 become 0:
  unpenalised) and ``s_j`` is column j's weighted standard deviation (computed around the
  weighted mean) when ``standardize=True``, else 1;
* with ``intercept=FALSE`` columns are scaled by ``s_j`` but NOT centred; y is scaled by its
  weighted SD (again not centred) -- this only changes the scale of lambda and of the
  convergence threshold, and lambdas are reported on the original y scale as glmnet does;
* the lambda sequence: ``lambda_max`` is the largest ``|gradient_j| / vp_j`` over penalised
  columns after the unpenalised columns have been fitted (glmnet's ``alm = big`` first step), then
  ``nlambda`` values log-spaced down to ``lambda_max * lambda_min_ratio`` (ratio 1e-4, or 0.01 when
  n < p). As in glmnet, a path computed from its own sequence stops early (after at least 5
  lambdas) when the deviance ratio changes by less than ``fdev = 1e-5`` relatively or exceeds
  ``devmax = 0.999``; a user-supplied sequence is never truncated;
* coordinate descent with covariance updates and warm starts along the path; converged when
  ``max_j xv_j * delta_j^2 < tol`` on the standardised scale (glmnet ``thresh``, default 1e-7);
* columns that are constant have coefficient 0 (glmnet excludes them).

* cross-validation as ``cv.glmnet``: every fold fitted on its own lambda sequence, predictions
  at the full-data lambdas interpolated (``lambda.interp``); ``foldid`` as in R, so an R analysis
  can be reproduced fold for fold (tests/data/glmnet_cv_reference.json: glmnet 4.1-6 values).

Differences from glmnet: everything is computed in p-space from the weighted cross-product
moments (``X'WX``, ``X'Wy``, per fold by subtraction from the total; site-dummy columns from
per-site sums), which gives the same minimiser and the same coordinate-descent iterates up to
rounding; all penalty factors zero is allowed here (glmnet stops with an error) and gives
weighted least squares at every lambda; the constant-column check is on the weighted variance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from clusterhte.methods.base import MethodError

FDEV = 1e-5      # glmnet.control()$fdev
DEVMAX = 0.999   # glmnet.control()$devmax
MNLAM = 5        # glmnet.control()$mnlam


# --------------------------------------------------------------------------------------------
# coordinate-descent kernel (p-space, covariance updates)
# --------------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def _coordinate(u, xv_k, vp_k, lam):  # pragma: no cover - numba
    """glmnet's coordinate update: the soft-thresholded ``u / xv_k`` (no threshold when the
    column is unpenalised, ``vp_k <= 0``)."""
    if vp_k <= 0.0:
        return u / xv_k
    v = abs(u) - vp_k * lam
    if v > 0.0:
        return (v if u > 0 else -v) / xv_k
    return 0.0


@numba.njit(cache=True, inline="always")
def _apply_step(g, Gt, k, d, xv_k, rsq, dlx):  # pragma: no cover - numba
    """Move coefficient ``k`` by ``d``: update the gradient ``g`` in place (``g_j -= G[j, k] d``,
    read from row k of ``Gt = G.T``, which is contiguous) and return glmnet's running R^2 and
    largest weighted squared change of the pass."""
    rsq += d * (2.0 * g[k] - d * xv_k)
    dd = xv_k * d * d
    if dd > dlx:
        dlx = dd
    Gk = Gt[k]
    for j in range(g.shape[0]):
        g[j] -= Gk[j] * d
    return rsq, dlx


@numba.njit(cache=True)
def _cd_path(G, c, xv, vp, ju, lams, tol, max_iter, early_stop):  # pragma: no cover - numba
    """Lasso path on the standardised scale, in the order of glmnet's ``elnet1`` (covariance).

    Minimises 1/2 b'Gb - c'b + lam * sum_j vp_j |b_j| for each lam in ``lams`` (warm starts);
    ``lams[m] = inf`` fits only the unpenalised columns. As glmnet: a full pass over all columns,
    then passes over the active set (columns ever nonzero, in order of entry) until the largest
    ``xv_j * delta_j^2`` is below ``tol``, then a full pass again, until a full pass moves less
    than ``tol``; R^2 is accumulated from the updates. Returns (B, n_fitted, rsq, n_passes);
    n_passes < 0 signals that ``max_iter`` passes were exceeded.
    """
    p = G.shape[0]
    # the column G[:, k] of every update, as a contiguous row: the same numbers (a copy of the
    # transpose, not the symmetric G itself, whose two triangles may differ in the last bit), so
    # the same iterates, with the inner loop running over adjacent memory
    Gt = np.empty((p, p))
    for i in range(p):
        for j in range(p):
            Gt[i, j] = G[j, i]
    nlam = lams.shape[0]
    B = np.zeros((nlam, p))
    rsq_out = np.zeros(nlam)
    b = np.zeros(p)
    g = c.copy()
    mm = np.zeros(p, dtype=np.int64)
    ia = np.zeros(p, dtype=np.int64)
    nin = 0
    rsq = 0.0
    npass = 0
    mnl = min(5, nlam)
    nfit = nlam
    for m in range(nlam):
        lam = lams[m]
        rsq0 = rsq
        while True:
            # full pass
            npass += 1
            dlx = 0.0
            for k in range(p):
                if ju[k] == 0:
                    continue
                ak = b[k]
                nb = _coordinate(g[k] + ak * xv[k], xv[k], vp[k], lam)
                b[k] = nb
                if nb == ak:
                    continue
                if mm[k] == 0:
                    mm[k] = 1
                    ia[nin] = k
                    nin += 1
                rsq, dlx = _apply_step(g, Gt, k, nb - ak, xv[k], rsq, dlx)
            if dlx < tol:
                break
            if npass > max_iter:
                return B, m, rsq_out, -npass
            # passes over the active set
            while True:
                npass += 1
                dlx = 0.0
                for l in range(nin):
                    k = ia[l]
                    ak = b[k]
                    nb = _coordinate(g[k] + ak * xv[k], xv[k], vp[k], lam)
                    b[k] = nb
                    if nb == ak:
                        continue
                    rsq, dlx = _apply_step(g, Gt, k, nb - ak, xv[k], rsq, dlx)
                if dlx < tol:
                    break
                if npass > max_iter:
                    return B, m, rsq_out, -npass
        for j in range(p):
            B[m, j] = b[j]
        rsq_out[m] = rsq
        if early_stop and m + 1 >= mnl:
            if rsq - rsq0 < 1e-5 * rsq or rsq > 0.999:
                nfit = m + 1
                break
    return B, nfit, rsq_out, npass


# --------------------------------------------------------------------------------------------
# moments and standardisation
# --------------------------------------------------------------------------------------------
@dataclass
class _Moments:
    """Weighted cross-product sums of one data set (weights not normalised)."""

    n: int
    W: float
    Sx: np.ndarray    # X'w
    Sxx: np.ndarray   # X'WX
    Sy: float         # w'y
    Syy: float        # y'Wy
    Sxy: np.ndarray   # X'Wy

    @classmethod
    def of(cls, X, y, w) -> "_Moments":
        return cls.of_augmented(np.column_stack([X, y]), w)

    @classmethod
    def of_augmented(cls, A, w) -> "_Moments":
        """Moments from A = [X, y] (one cross-product for X'WX, X'Wy and y'Wy)."""
        Aw = A * w[:, None]
        M = A.T @ Aw
        s = Aw.sum(axis=0)
        p = A.shape[1] - 1
        return cls(A.shape[0], float(w.sum()), s[:p], M[:p, :p], float(s[p]), float(M[p, p]),
                   M[:p, p].copy())

    def __add__(self, o: "_Moments") -> "_Moments":
        return _Moments(self.n + o.n, self.W + o.W, self.Sx + o.Sx, self.Sxx + o.Sxx,
                        self.Sy + o.Sy, self.Syy + o.Syy, self.Sxy + o.Sxy)

    def __sub__(self, o: "_Moments") -> "_Moments":
        return _Moments(self.n - o.n, self.W - o.W, self.Sx - o.Sx, self.Sxx - o.Sxx,
                        self.Sy - o.Sy, self.Syy - o.Syy, self.Sxy - o.Sxy)


@dataclass
class _Standardised:
    G: np.ndarray
    c: np.ndarray
    xv: np.ndarray
    xs: np.ndarray
    ys: float
    ju: np.ndarray


def _standardise(mom: _Moments, standardize: bool) -> _Standardised:
    """glmnet ``standard`` for intercept = FALSE, from the weighted moments."""
    W = mom.W
    mx = mom.Sx / W
    Exx = mom.Sxx / W
    Exy = mom.Sxy / W
    my = mom.Sy / W
    vy = mom.Syy / W - my * my
    d = np.diag(Exx).copy()
    var = d - mx * mx
    ju = (var > 1e-13 * np.maximum(d, 1e-300)).astype(np.int64)
    if vy <= 0:
        raise MethodError("lasso: the response (minus offset) is constant; nothing to fit")
    ys = float(np.sqrt(vy))
    xs = np.where(ju == 1, np.sqrt(np.where(ju == 1, var, 1.0)), 1.0) if standardize else np.ones_like(d)
    G = Exx / np.outer(xs, xs)
    c = Exy / (xs * ys)
    xv = np.diag(G).copy()
    xv[ju == 0] = 1.0
    return _Standardised(np.ascontiguousarray(G), c, xv, xs, ys, ju)


def _rescale_penalty(penalty_factor, p: int) -> np.ndarray:
    pf = np.ones(p) if penalty_factor is None else np.asarray(penalty_factor, dtype=float).ravel()
    if pf.shape[0] != p:
        raise MethodError(f"lasso: penalty_factor has length {pf.shape[0]}, the design has {p} columns")
    if not np.all(np.isfinite(pf)):
        raise MethodError("lasso: penalty_factor has non-finite entries")
    vp = np.maximum(pf, 0.0)
    s = vp.sum()
    return vp * (p / s) if s > 0 else vp


def _check_xyw(X, y, weights, offset):
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise MethodError(f"lasso: X must be 2-dimensional, got shape {X.shape}")
    n = X.shape[0]
    y = np.asarray(y, dtype=float).ravel()
    if y.shape[0] != n:
        raise MethodError(f"lasso: y has {y.shape[0]} rows, X has {n}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.shape[0] != n:
        raise MethodError(f"lasso: weights have {w.shape[0]} rows, X has {n}")
    if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise MethodError("lasso: weights must be finite, non-negative and not all zero")
    if offset is not None:
        off = np.asarray(offset, dtype=float).ravel()
        if off.shape[0] != n:
            raise MethodError(f"lasso: offset has {off.shape[0]} rows, X has {n}")
        y = y - off
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise MethodError("lasso: X, y and offset must be finite")
    return np.ascontiguousarray(X), y, w


def _path(st: _Standardised, vp: np.ndarray, n: int, lambdas, nlambda: int, lambda_min_ratio,
          tol: float, max_iter: int):
    """(lambdas on the original scale, coefficients on the original scale (nlam, p))."""
    p = st.G.shape[0]
    penalised = (vp > 0) & (st.ju == 1)
    if lambdas is not None:
        lam = np.asarray(lambdas, dtype=float).ravel()
        if lam.size == 0 or np.any(lam < 0) or not np.all(np.isfinite(lam)):
            raise MethodError("lasso: lambdas must be non-negative finite numbers")
        lam_std = lam / st.ys
        early = False
    elif not penalised.any():
        lam = np.zeros(1)
        lam_std = lam
        early = False
    else:
        if nlambda < 1:
            raise MethodError(f"lasso: nlambda must be >= 1, got {nlambda}")
        ratio = (0.01 if n < p else 1e-4) if lambda_min_ratio is None else float(lambda_min_ratio)
        if not 0 < ratio < 1:
            raise MethodError(f"lasso: lambda_min_ratio must be in (0, 1), got {ratio}")
        B0, _, _, _ = _cd_path(st.G, st.c, st.xv, vp, st.ju, np.array([np.inf]), tol, max_iter, False)
        g = st.c - st.G @ B0[0]
        lmax = float(np.max(np.abs(g[penalised]) / vp[penalised]))
        if nlambda == 1:
            seq = np.array([lmax])
        else:
            seq = lmax * ratio ** (np.arange(nlambda) / (nlambda - 1))
        lam_std = seq.copy()
        lam_std[0] = np.inf  # glmnet: first step with alm = big
        lam = seq * st.ys
        early = True
    if not penalised.any():
        # no penalty at all: weighted least squares at every lambda, solved directly
        on = st.ju == 1
        b = np.zeros(p)
        b[on] = np.linalg.lstsq(st.G[np.ix_(on, on)], st.c[on], rcond=None)[0]
        return lam.copy(), np.tile(b * st.ys / st.xs, (lam.size, 1))
    B, nfit, _, npass = _cd_path(st.G, st.c, st.xv, vp, st.ju, lam_std, tol, max_iter, early)
    if npass < 0:
        raise MethodError(f"lasso: coordinate descent did not converge within max_iter={max_iter} "
                          f"passes (at lambda #{nfit + 1})")
    B = B[:nfit] * (st.ys / st.xs)[None, :]
    return lam[:nfit].copy(), B


def lasso_path(X, y, weights=None, penalty_factor=None, lambdas=None, nlambda: int = 100,
               lambda_min_ratio: float | None = None, offset=None, standardize: bool = True,
               tol: float = 1e-7, max_iter: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """glmnet gaussian lasso path, weighted, no intercept.

    Returns ``(lambdas, coefs)`` with ``coefs`` of shape (n_lambda, p) on the original scale.
    ``offset`` is subtracted from ``y``. See the module docstring for the exact conventions.
    """
    X, y, w = _check_xyw(X, y, weights, offset)
    vp = _rescale_penalty(penalty_factor, X.shape[1])
    st = _standardise(_Moments.of(X, y, w), standardize)
    return _path(st, vp, X.shape[0], lambdas, nlambda, lambda_min_ratio, tol, max_iter)


def select_lambda_min(lambdas: np.ndarray, cvm: np.ndarray) -> int:
    """Index of glmnet's ``lambda.min``: the LARGEST lambda whose CV error equals the minimum."""
    cvm = np.asarray(cvm, dtype=float)
    lambdas = np.asarray(lambdas, dtype=float)
    ok = np.isfinite(cvm)
    if not ok.any():
        raise MethodError("lasso: no finite cross-validation error")
    at_min = ok & (cvm <= np.min(cvm[ok]))
    idx = np.flatnonzero(at_min)
    return int(idx[np.argmax(lambdas[idx])])


@dataclass
class CVLasso:
    """Result of :func:`cv_lasso` (the parts of a ``cv.glmnet`` object that are used).

    lambdas : the full-data lambda sequence; cvm, cvsd : weighted CV mean squared error per lambda
    and its standard error (glmnet's grouped formulas); index_min, lambda_min : ``lambda.min``;
    coefs : full-data path (n_lambda, p); coef_min : coefficients at ``lambda_min``;
    foldid : the fold labels used; penalty_factor : the penalty factors after glmnet's rescaling;
    fold_lambdas : each fold's own lambda sequence (its fit's ``lambda``).
    """

    lambdas: np.ndarray
    cvm: np.ndarray
    cvsd: np.ndarray
    index_min: int
    lambda_min: float
    coefs: np.ndarray
    coef_min: np.ndarray
    foldid: np.ndarray
    penalty_factor: np.ndarray = field(repr=False, default=None)
    fold_lambdas: list = field(repr=False, default=None)


def lambda_interp(lambdas: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """glmnet's ``lambda.interp``: (left, right, frac) with coef(s) = frac*B[left] + (1-frac)*B[right].

    Linear in lambda between the two neighbouring path values; ``s`` outside the path's range is
    clamped to its ends (0-based indices).
    """
    lam = np.asarray(lambdas, dtype=float)
    s = np.asarray(s, dtype=float)
    if lam.size == 1:
        z = np.zeros(s.size, dtype=np.int64)
        return z, z, np.ones(s.size)
    k = lam.size
    sfrac = (lam[0] - s) / (lam[0] - lam[-1])
    ln = (lam[0] - lam) / (lam[0] - lam[-1])
    sfrac = np.clip(sfrac, ln.min(), ln.max())
    coord = np.interp(sfrac, ln, np.arange(k, dtype=float))
    left = np.floor(coord).astype(np.int64)
    right = np.ceil(coord).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (sfrac - ln[right]) / (ln[left] - ln[right])
    frac[left == right] = 1.0
    frac[np.abs(ln[left] - ln[right]) < np.finfo(float).eps] = 1.0
    return left, right, frac


def _coefs_at(lambdas, B, s) -> np.ndarray:
    """Coefficients of a path (``lambdas``, ``B``) at the lambdas ``s`` (predict.glmnet, exact=FALSE)."""
    left, right, frac = lambda_interp(lambdas, s)
    return frac[:, None] * B[left] + (1.0 - frac)[:, None] * B[right]


def _fold_moments(X, y, w, fcode, K, dummies) -> list[_Moments]:
    """Per-fold moments of the design ``[X, dummy block]`` and y.

    ``dummies = (codes, sign, q)``: q extra columns, column k = sign_i * 1{codes_i == k}
    (codes < 0: all zero). Their moments come from per-(fold, code) sums, so the cost is
    O(n (p + 1)) rather than O(n (p + q)^2).
    """
    # rows grouped by fold, in their order within each fold (a stable counting sort)
    order = np.concatenate([np.flatnonzero(fcode == k) for k in range(K)])
    A = np.column_stack([X, y])[order]
    ws = w[order]
    bounds = np.r_[0, np.cumsum(np.bincount(fcode, minlength=K))]
    moms = [_Moments.of_augmented(A[bounds[k]:bounds[k + 1]], ws[bounds[k]:bounds[k + 1]])
            for k in range(K)]
    if dummies is None:
        return moms
    codes, sign, q = dummies
    codes = np.asarray(codes, dtype=np.int64)
    sign = np.asarray(sign, dtype=float)
    p = X.shape[1]
    on = codes >= 0
    key = fcode[on] * q + codes[on]
    wo = w[on]
    so = sign[on]
    size = K * q

    def sums(v):
        return np.bincount(key, weights=v, minlength=size).reshape(K, q)

    Sd = sums(wo * so)                        # D'w
    Sdd = sums(wo * so * so)                  # diag of D'WD
    ws_ = wo * so
    Sxd = np.stack([sums(ws_ * X[on, a]) for a in range(p)], axis=1) if p else np.zeros((K, 0, q))
    Sdy = sums(ws_ * y[on])                   # D'Wy
    out = []
    for k, m in enumerate(moms):
        Sxx = np.empty((p + q, p + q))
        Sxx[:p, :p] = m.Sxx
        Sxx[:p, p:] = Sxd[k]
        Sxx[p:, :p] = Sxd[k].T
        Sxx[p:, p:] = np.diag(Sdd[k])
        out.append(_Moments(m.n, m.W, np.r_[m.Sx, Sd[k]], Sxx, m.Sy, m.Syy, np.r_[m.Sxy, Sdy[k]]))
    return out


def _fold_codes(foldid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(foldid, return_inverse=True)``; small non-negative integer labels (the usual
    1..K) without sorting the rows."""
    if foldid.dtype.kind in "iu" and foldid.size and foldid.min() >= 0 and foldid.max() < 4 * foldid.size + 64:
        present = np.bincount(foldid) > 0
        folds = np.flatnonzero(present).astype(foldid.dtype)
        code = np.cumsum(present) - 1
        return folds, code[foldid]
    return np.unique(foldid, return_inverse=True)


def cv_lasso(X, y, weights=None, penalty_factor=None, foldid=None, offset=None, lambdas=None,
             nlambda: int = 100, lambda_min_ratio: float | None = None, standardize: bool = True,
             tol: float = 1e-7, max_iter: int = 100_000, dummies=None) -> CVLasso:
    """``cv.glmnet(x, y, weights, offset, penalty.factor, foldid, intercept = FALSE)``, gaussian.

    As glmnet 4.1 (``cv.glmnet.raw`` / ``buildPredmat`` with ``alignment = "lambda"``): the
    full-data fit gives the lambda sequence; each fold is fitted on the other folds with its OWN
    lambda sequence (own ``lambda_max``, own early stopping; a user-given ``lambdas`` is used by
    every fit instead), and its held-out predictions at the full-data lambdas are interpolated
    linearly in lambda between its own path values (``lambda.interp``; clamped at the ends). The
    held-out weighted squared errors are averaged with glmnet's grouped weighted mean (``cvm``),
    and ``lambda_min`` is the largest lambda at the minimum of ``cvm`` (never the 1-SE rule).
    ``foldid``: one fold label per row (as R's ``foldid``; any labels, at least 3 folds).

    ``dummies = (codes, sign, q)`` appends q columns ``sign * 1{codes == k}`` (k = 0..q-1) to
    ``X`` without forming them (the WS-* site dummies); coefficients then have p + q entries.
    """
    X, y, w = _check_xyw(X, y, weights, offset)
    n, p = X.shape
    if foldid is None:
        raise MethodError("lasso: cv_lasso needs foldid (one fold label per row)")
    foldid = np.asarray(foldid).ravel()
    if foldid.shape[0] != n:
        raise MethodError(f"lasso: foldid has {foldid.shape[0]} rows, X has {n}")
    folds, fcode = _fold_codes(foldid)
    K = folds.size
    if K < 3:
        raise MethodError(f"lasso: need at least 3 folds, got {K}")
    if dummies is not None:
        codes, sign, q = dummies
        codes = np.asarray(codes).ravel()
        sign = np.asarray(sign, dtype=float).ravel()
        if codes.shape[0] != n or sign.shape[0] != n:
            raise MethodError(f"lasso: dummy codes/signs have {codes.shape[0]}/{sign.shape[0]} rows, X has {n}")
        if codes.size and (codes.max() >= q):
            raise MethodError(f"lasso: dummy code {int(codes.max())} out of range for {q} dummy columns")
        dummies = (codes, sign, int(q))
        ptot = p + int(q)
    else:
        ptot = p
    vp = _rescale_penalty(penalty_factor, ptot)
    fold_mom = _fold_moments(X, y, w, fcode.astype(np.int64), K, dummies)
    total = fold_mom[0]
    for fm in fold_mom[1:]:
        total = total + fm
    st = _standardise(total, standardize)
    lam, B = _path(st, vp, n, lambdas, nlambda, lambda_min_ratio, tol, max_iter)
    nl = lam.size
    raw = np.empty((K, nl))
    Wk = np.empty(K)
    fold_lams = []
    for k in range(K):
        fold = fold_mom[k]
        st_k = _standardise(total - fold, standardize)
        lk, Bk = _path(st_k, vp, n - fold.n, lambdas, nlambda, lambda_min_ratio, tol, max_iter)
        fold_lams.append(lk)
        if lambdas is None:
            Bk = _coefs_at(lk, Bk, lam)
        # held-out weighted squared error, from the fold's moments
        sse = fold.Syy - 2.0 * (Bk @ fold.Sxy) + np.sum((Bk @ fold.Sxx) * Bk, axis=1)
        Wk[k] = fold.W
        raw[k] = sse / fold.W if fold.W > 0 else np.nan
    good = np.isfinite(raw)
    wk = np.where(good, Wk[:, None], 0.0)
    cvm = np.sum(np.where(good, raw, 0.0) * wk, axis=0) / wk.sum(axis=0)
    Ngood = good.sum(axis=0)
    cvsd = np.sqrt(np.sum(np.where(good, (raw - cvm) ** 2, 0.0) * wk, axis=0) / wk.sum(axis=0)
                   / np.maximum(Ngood - 1, 1))
    i = select_lambda_min(lam, cvm)
    return CVLasso(lam, cvm, cvsd, i, float(lam[i]), B, B[i].copy(), foldid, vp, fold_lams)


__all__ = ["lasso_path", "cv_lasso", "CVLasso", "select_lambda_min", "lambda_interp"]
