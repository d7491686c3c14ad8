"""Small-sample inference for linear mixed and penalised (GAMM) models: t intervals with
Satterthwaite or Kenward-Roger denominator degrees of freedom.

Why: with 10-60 clusters a Wald z interval for a cluster-level contrast (the ATE of a CRT) is too
short. The contrast's variance ``c' Phi c`` is estimated through the variance components, whose
own uncertainty is of the order ``1/J``; the t reference distribution with a matched number of
degrees of freedom (about the number of clusters minus the cluster-level fixed effects for the
ATE of a CRT) accounts for it.

Variance-components model (linear parametrisation ``psi``)::

    V(psi) = sum_k psi_k Z_k Z_k' + psi_K I         (psi_k >= 0: random-effect variances; psi_K = sigma2)

Quantities (``Phi = (X'V^{-1}X)^{-1}``, ``P = V^{-1} - V^{-1} X Phi X' V^{-1}``, ``G_k = dV/dpsi_k``)::

    P_k  = -X'V^{-1} G_k V^{-1} X          (= d Phi^{-1} / d psi_k)
    Q_kl =  X'V^{-1} G_k V^{-1} G_l V^{-1} X
    I_kl = 1/2 tr(P G_k P G_l)             expected REML information
    H_kl = -tr(P G_k P G_l) + 2 y'P G_k P G_l P y   observed Hessian of the REML deviance -2 l_R

* **Satterthwaite** (lmerTest, Kuznetsova et al. 2017): ``df = 2 (c'Phi c)^2 / (g' W g)`` with
  ``g_k = d(c'Phi c)/d psi_k = -c'Phi P_k Phi c`` and ``W = Cov(psi_hat)``. lmerTest takes ``W``
  from the observed Hessian (``W = 2 H^{-1}``), numerically differentiated in lme4's ``(theta,
  sigma)`` parametrisation. At an interior optimum the observed Hessian transforms exactly with the
  parametrisation, so the linear ``psi`` used here gives lmerTest's df. **Difference**: when a
  variance is estimated on the boundary (0), lmerTest's ``theta = sd/sigma`` has a zero Jacobian
  (``d Phi / d theta = 0`` at ``theta = 0``), the variance component drops out and the df become the
  residual df (about ``n - p``, 600 in a 40-cluster trial): the interval of a cluster-level contrast
  is then a z interval around an SE that ignores the cluster variance. Here, at the boundary (or
  when the observed Hessian is not positive definite), ``W`` is the inverse *expected* information
  in the linear parametrisation, which stays informative at ``psi_k = 0``: for a CRT's treatment
  contrast it gives about ``J - (cluster-level fixed effects)`` df whatever the estimate of the
  cluster variance.
* **Kenward-Roger** (Kenward & Roger 1997; pbkrtest's ``vcovAdj`` and ``Lb_ddf``): the adjusted
  covariance ``Phi_A = Phi + 2 Phi [sum_kl W_kl (Q_kl - P_k Phi P_l)] Phi`` with ``W = 2 (2 I)^{-1}``
  the inverse expected information, and for a single contrast the df ``2 / A2``,
  ``A2 = sum_kl W_kl a_k a_l``, ``a_k = c'Phi P_k Phi c / c'Phi c`` (the Satterthwaite df with the
  expected information; pbkrtest computes them with the unadjusted ``Phi``, as here).

Numerics: with ``V = sigma2 (I + Z D Z')`` (``D`` diagonal, ``Z = [Z_1, ...]``), ``V^{-1} = T /
sigma2``, ``T = I - Z B Z'``, ``B = D^{1/2} (I + D^{1/2} Z'Z D^{1/2})^{-1} D^{1/2}`` (finite at
``D = 0``). All sandwiches ``M' T^m M`` of ``M = [X, Z, y]`` follow from ``K = M'M`` (indicator
blocks from per-group sums) by the recursion ``S_m = S_{m-1} - S_{m-1}[:, Z] B K[Z, :]``; nothing
of size ``n x n`` (or ``n x J`` for a random intercept given as codes) is formed.
Only variance-component models (independent random effects per block: random intercepts, nested or
crossed) are covered, not correlated random slopes.

:func:`penalized_satterthwaite` is the analogue for a penalised regression (GAMM) with the
Bayesian covariance ``Vp = phi (X'X + S_lambda)^{-1}``; see its docstring.

:func:`t_interval` is the helper any method can use for a t-based Wald interval.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["t_interval", "VarCompInference", "varcomp_inference", "penalized_satterthwaite",
           "penalized_information", "DDF_METHODS"]

DDF_METHODS = ("kenward-roger", "satterthwaite", "none")


def t_interval(point, se, df, level: float = 0.95):
    """Wald interval ``point -+ t_{df, (1+level)/2} se`` (elementwise; ``df = inf`` or ``None`` gives
    the normal quantile). Returns ``(lower, upper)`` as float arrays.

    ``df`` must be positive (NaN propagates to NaN bounds); ``level`` in (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    point = np.asarray(point, dtype=float)
    se = np.asarray(se, dtype=float)
    df = np.inf if df is None else np.asarray(df, dtype=float)
    if np.any(np.asarray(df) <= 0):
        raise ValueError("degrees of freedom must be positive")
    q = stats.t.ppf(0.5 + level / 2, df)
    return point - q * se, point + q * se


@dataclass
class VarCompInference:
    """Small-sample ingredients of a fitted variance-components LMM (see the module docstring).

    Phi : (p, p) ``(X'V^{-1}X)^{-1}``; P : (K, p, p) the ``P_k``; W_exp : (K, K) inverse expected
    information; W_obs : inverse observed information (``None`` when not positive definite or a
    variance is on the boundary); Phi_A : Kenward-Roger adjusted covariance; IE2 : ``tr(P G_k P G_l)``;
    H_obs : observed Hessian of ``-2 l_R`` (``None`` on the boundary).
    """

    Phi: np.ndarray
    P: np.ndarray
    W_exp: np.ndarray
    W_obs: np.ndarray | None
    Phi_A: np.ndarray
    psi: np.ndarray
    IE2: np.ndarray | None = None
    H_obs: np.ndarray | None = None

    def _a(self, C):
        C = np.atleast_2d(np.asarray(C, dtype=float))
        var = np.einsum("ij,jk,ik->i", C, self.Phi, C)
        CPhi = C @ self.Phi                                  # (m, p)
        g = -np.einsum("ij,kjl,il->ik", CPhi, self.P, CPhi)  # (m, K): d(c'Phi c)/d psi_k
        return var, g

    def satterthwaite(self, C):
        """(se, df) of the contrasts ``C beta`` (rows of ``C``), Satterthwaite with ``W_obs`` when
        available, else ``W_exp``."""
        var, g = self._a(C)
        W = self.W_obs if self.W_obs is not None else self.W_exp
        den = np.einsum("ik,kl,il->i", g, W, g)
        return np.sqrt(np.maximum(var, 0.0)), _df(var, den)

    def kenward_roger(self, C):
        """(se, df) of the contrasts ``C beta``: SE from the adjusted covariance ``Phi_A``, df
        ``2 / A2`` (pbkrtest's ``Lb_ddf`` for one contrast)."""
        C = np.atleast_2d(np.asarray(C, dtype=float))
        var, g = self._a(C)
        den = np.einsum("ik,kl,il->i", g, self.W_exp, g)
        var_a = np.einsum("ij,jk,ik->i", C, self.Phi_A, C)
        bad = (var_a <= 0) & (var > 0)
        if bad.any():
            warnings.warn(f"Kenward-Roger: the adjusted variance of {int(bad.sum())} contrast(s) is not "
                          f"positive (the design has almost no information on the variance components); "
                          f"their SE is the unadjusted one", RuntimeWarning, stacklevel=2)
            var_a = np.where(bad, var, var_a)
        return np.sqrt(np.maximum(var_a, 0.0)), _df(var, den)

    def inference(self, C, method: str):
        """(se, df) by ``method`` in ``DDF_METHODS`` (``"none"``: the plain SE and df = inf)."""
        if method == "kenward-roger":
            return self.kenward_roger(C)
        if method == "satterthwaite":
            return self.satterthwaite(C)
        if method == "none":
            var, _ = self._a(C)
            return np.sqrt(np.maximum(var, 0.0)), np.full(var.shape, np.inf)
        raise ValueError(f"ddf method must be one of {DDF_METHODS}, got {method!r}")


def _df(var, den):
    """``2 var^2 / den``; a zero denominator (variance known exactly) gives df = inf. Below 1 is
    clipped to 1 (the t quantile is not defined below 0 and is extreme below 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(den > 0, 2.0 * var ** 2 / np.where(den > 0, den, 1.0), np.inf)
    return np.maximum(df, 1.0)


def varcomp_inference(y, X, Zs, psi, boundary_tol: float = 1e-8) -> VarCompInference:
    """Satterthwaite and Kenward-Roger ingredients for ``y = X beta + sum_k Z_k u_k + e``.

    Parameters
    ----------
    y : (n,) outcome; X : (n, p) fixed-effects design (full column rank).
    Zs : list of random-effect designs, ``u_k ~ N(0, psi_k I)``: an (n, q_k) matrix, or an (n,)
        array of integer codes ``0..J-1`` standing for the indicator matrix of a random intercept
        (cross products then come from per-group sums; no ``n x J`` matrix is formed).
    psi : (K,) the estimated ``(psi_1, ..., psi_{K-1}, sigma2)`` (REML estimates).
    boundary_tol : a variance below ``boundary_tol * sigma2`` counts as on the boundary (then the
        observed information is not used).
    """
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    n, p = X.shape
    psi = np.asarray(psi, dtype=float)
    K = psi.size
    if len(Zs) != K - 1:
        raise ValueError(f"need {K - 1} random-effect designs for {K} variance parameters")
    s2 = float(psi[-1])
    if not s2 > 0:
        raise ValueError(f"residual variance must be positive, got {s2}")
    Kmat, sizes = _cross_products(X, y, Zs)
    qz = int(sum(sizes))
    zsl = np.split(np.arange(p, p + qz), np.cumsum(sizes)[:-1]) if Zs else []
    xi = np.arange(p)
    zi = np.arange(p, p + qz)
    yi = p + qz
    d = np.concatenate([np.full(q, max(pk, 0.0) / s2) for q, pk in zip(sizes, psi[:-1])]) if Zs else np.zeros(0)
    sd = np.sqrt(d)
    ZtZ = Kmat[np.ix_(zi, zi)]
    B = sd[:, None] * np.linalg.inv(np.eye(zi.size) + sd[:, None] * ZtZ * sd[None, :]) * sd[None, :]
    B = 0.5 * (B + B.T)
    S = [Kmat]
    for _ in range(3):
        prev = S[-1]
        S.append(prev - prev[:, zi] @ B @ Kmat[zi, :])
    S1, S2, S3 = (0.5 * (s + s.T) for s in S[1:])
    # V^{-m} sandwiches are S_m / s2^m
    XVX = S1[np.ix_(xi, xi)] / s2
    Phi = np.linalg.inv(XVX)
    Phi = 0.5 * (Phi + Phi.T)
    # pieces
    XVZ = [S1[np.ix_(xi, z)] / s2 for z in zsl]          # X'V^-1 Z_k
    XV2X = S2[np.ix_(xi, xi)] / s2 ** 2
    XV3X = S3[np.ix_(xi, xi)] / s2 ** 3
    P = []
    for k in range(K):
        P.append(-(XVZ[k] @ XVZ[k].T) if k < K - 1 else -XV2X)
    P = np.array(P)

    def Q(k, l):
        if k < K - 1 and l < K - 1:
            return XVZ[k] @ (S1[np.ix_(zsl[k], zsl[l])] / s2) @ XVZ[l].T
        if k < K - 1:  # l residual
            return XVZ[k] @ (S2[np.ix_(zsl[k], xi)] / s2 ** 2)
        if l < K - 1:
            return Q(l, k).T
        return XV3X

    # tr(T^2) = n - 2 tr(B Z'Z) + tr(B Z'Z B Z'Z)
    BZ = B @ ZtZ
    trV2 = (n - 2 * np.trace(BZ) + np.sum(BZ * BZ.T)) / s2 ** 2

    def ktrace(k, l):
        if k < K - 1 and l < K - 1:
            m = S1[np.ix_(zsl[k], zsl[l])] / s2
            return float(np.sum(m * m))
        if k < K - 1 or l < K - 1:
            j = k if k < K - 1 else l
            return float(np.trace(S2[np.ix_(zsl[j], zsl[j])])) / s2 ** 2
        return float(trV2)

    Qm = [[Q(k, l) for l in range(K)] for k in range(K)]
    IE2 = np.empty((K, K))   # tr(P G_k P G_l)
    for k in range(K):
        for l in range(k, K):
            IE2[k, l] = IE2[l, k] = (ktrace(k, l) - 2 * np.sum(Phi * Qm[k][l])
                                     + np.sum((Phi @ P[k]) * (P[l] @ Phi)))
    W_exp = 2.0 * _pinv_sym(IE2)
    # Kenward-Roger adjusted covariance
    U = np.zeros((p, p))
    for k in range(K):
        for l in range(K):
            U += W_exp[k, l] * (Qm[k][l] - P[k] @ Phi @ P[l])
    Phi_A = Phi + 2 * Phi @ U @ Phi
    Phi_A = 0.5 * (Phi_A + Phi_A.T)
    # observed Hessian of -2 l_R: -tr(P G_k P G_l) + 2 r' G_k P G_l r, r = P y = V^{-1} e
    W_obs = H = None
    if np.all(psi[:-1] > boundary_tol * s2):
        beta = Phi @ (S1[xi, yi] / s2)
        a = np.zeros(p + qz + 1)
        a[xi] = -beta
        a[yi] = 1.0
        S1a, S2a, S3a = S1 @ a, S2 @ a, S3 @ a
        Ztr = [S1a[z] / s2 for z in zsl]                      # Z_k' r
        # P applied: u'P v = u'V^-1 v - (u'V^-1 X) Phi (X'V^-1 v)
        ZPr = [S2a[z] / s2 ** 2 - XVZ[k].T @ Phi @ (S2a[xi] / s2 ** 2) for k, z in enumerate(zsl)]
        rPr = a @ S3a / s2 ** 3 - (S2a[xi] / s2 ** 2) @ Phi @ (S2a[xi] / s2 ** 2)
        quad = np.empty((K, K))
        for k in range(K):
            for l in range(k, K):
                if l < K - 1:
                    ZPZ = S1[np.ix_(zsl[k], zsl[l])] / s2 - XVZ[k].T @ Phi @ XVZ[l]
                    v = Ztr[k] @ ZPZ @ Ztr[l]
                elif k < K - 1:
                    v = Ztr[k] @ ZPr[k]
                else:
                    v = rPr
                quad[k, l] = quad[l, k] = v
        H = -IE2 + 2 * quad
        ev = np.linalg.eigvalsh(H)
        if ev[0] > 1e-10 * max(ev[-1], 1e-300):
            W_obs = 2.0 * np.linalg.inv(H)
            W_obs = 0.5 * (W_obs + W_obs.T)
    return VarCompInference(Phi=Phi, P=P, W_exp=W_exp, W_obs=W_obs, Phi_A=Phi_A, psi=psi, IE2=IE2, H_obs=H)


def _cross_products(X, y, Zs):
    """``M'M`` for ``M = [X, Z_1, ..., y]`` with indicator blocks given as integer codes."""
    W = np.column_stack([X, y])
    blocks, sizes = [], []
    for z in Zs:
        z = np.asarray(z)
        if z.ndim == 1:
            codes = z.astype(np.int64)
            J = int(codes.max()) + 1
            blocks.append(("codes", codes, J))
            sizes.append(J)
        else:
            blocks.append(("dense", np.asarray(z, dtype=float), z.shape[1]))
            sizes.append(z.shape[1])

    def zt(b, A):   # Z_b' A for a dense (n, m) A
        kind, z, J = b
        if kind == "dense":
            return z.T @ A
        out = np.zeros((J, A.shape[1]))
        np.add.at(out, z, A)
        return out

    p = X.shape[1]
    qz = sum(sizes)
    K = np.empty((p + qz + 1, p + qz + 1))
    xy = np.r_[np.arange(p), p + qz]
    K[np.ix_(xy, xy)] = W.T @ W
    off = np.cumsum([p] + sizes)
    for i, b in enumerate(blocks):
        si = slice(off[i], off[i + 1])
        ZW = zt(b, W)
        K[si, :p] = ZW[:, :p]
        K[si, -1] = ZW[:, -1]
        K[:p, si] = ZW[:, :p].T
        K[-1, si] = ZW[:, -1]
        for j, c in enumerate(blocks[: i + 1]):
            sj = slice(off[j], off[j + 1])
            if b[0] == "codes" and c[0] == "codes":
                ZZ = np.zeros((b[2], c[2]))
                np.add.at(ZZ, (b[1], c[1]), 1.0)
            elif c[0] == "dense":
                ZZ = zt(b, c[1])
            else:
                ZZ = zt(c, b[1]).T
            K[si, sj] = ZZ
            K[sj, si] = ZZ.T
    return K, sizes


def _pinv_sym(A):
    """Inverse of a symmetric matrix; the pseudo-inverse when nearly singular (as pbkrtest)."""
    ev = np.linalg.eigvalsh(A)
    if np.min(np.abs(ev)) > 1e-10:
        out = np.linalg.inv(A)
    else:
        out = np.linalg.pinv(A, hermitian=True)
    return 0.5 * (out + out.T)


def penalized_information(XtX, Ainv, blocks, phi, n):
    """``[tr(P G_a P G_b)]`` (twice the expected REML information) of a penalised regression in the
    parametrisation ``(tau2_1, ..., tau2_K, phi)``; see :func:`penalized_satterthwaite`."""
    K = len(blocks)
    AX = Ainv @ XtX
    R1 = XtX - XtX @ AX
    R2 = XtX - 2 * XtX @ AX + XtX @ AX @ AX
    Splus = [np.linalg.pinv(S, hermitian=True) for _, S in blocks]
    sl = [s for s, _ in blocks]
    IE2 = np.empty((K + 1, K + 1))
    for k in range(K):
        for l in range(k, K):
            m1 = Splus[k] @ R1[sl[k], sl[l]]
            m2 = Splus[l] @ R1[sl[l], sl[k]]
            IE2[k, l] = IE2[l, k] = np.sum(m1 * m2.T) / phi ** 2
        IE2[k, K] = IE2[K, k] = np.sum(Splus[k] * R2[sl[k], sl[k]]) / phi ** 2
    IE2[K, K] = (n - 2 * np.trace(AX) + np.sum(AX * AX.T)) / phi ** 2
    return IE2


def penalized_satterthwaite(XtX, A, blocks, lambdas, phi, n, C, fixed=None):
    """Satterthwaite (se, df) of contrasts ``C beta`` of a penalised regression (GAMM).

    The fit is ``beta = A^{-1} X'y`` with ``A = X'X + sum_k lambda_k S_k`` and the Bayesian
    covariance ``Vp = phi A^{-1}`` (mgcv's ``vcov``). In its mixed-model representation the penalised
    directions of block ``k`` are random, ``u_k ~ N(0, tau2_k S_k^+)`` with ``tau2_k = phi / lambda_k``,
    and the unpenalised directions are fixed; then ``V = phi I + sum_k tau2_k X_k S_k^+ X_k'`` and the
    REML projector is ``P = (I - X A^{-1} X') / phi`` (so nothing ``n x n`` is needed)::

        tr(P G_k P G_l) = tr(S_k^+ R1_kl S_l^+ R1_lk) / phi^2,      R1 = X'X - X'X A^{-1} X'X
        tr(P G_k P)     = tr(S_k^+ R2_kk) / phi^2,                   R2 = X'(I - H)^2 X
        tr(P^2)         = (n - 2 tr(A^{-1}X'X) + tr((A^{-1}X'X)^2)) / phi^2

    ``W = 2 [tr(P G_a P G_b)]^{-1}`` is the inverse expected REML information in the linear
    parametrisation ``psi = (tau2_1, ..., tau2_K, phi)`` and the gradient of ``c'Vp c`` is
    ``d Vp / d phi = A^{-1} X'X A^{-1}``, ``d Vp / d tau2_k = lambda_k^2 A^{-1} S_k A^{-1}``. The df
    is ``2 (c'Vp c)^2 / (g' W g)``: the Satterthwaite approximation of ``c'Vp_hat c`` by a scaled
    chi-square, with the variance components treated as estimated. With a single ridge block (the
    random-intercept LMM) ``Vp`` of the fixed part is the GLS covariance for every ``psi``, so this
    is exactly the LMM's Satterthwaite df with the expected information (= pbkrtest's df).
    The expected (not observed) information is used because variance components often sit at the
    boundary (``lambda_k`` at its upper bound: a linear smooth, or no cluster variance), where it
    stays informative.

    ``fixed`` (boolean per block, default none): blocks whose smoothing parameter ``lambda_k`` is held
    at its estimate, i.e. inference *conditional on the fitted smoothing parameters* as mgcv's
    ``Vp``: then ``tau2_k = phi / lambda_k`` moves with ``phi`` only, and the parameters are the
    free ``tau2_k`` and ``phi`` with ``dV/dphi = I + sum_{k fixed} G_k / lambda_k``. Information and
    gradient follow by the linear map ``T`` (rows: free ``e_k``; ``e_phi + sum_{k fixed} e_k /
    lambda_k``): ``I_new = T I T'``, ``g_new = T g``.

    Parameters: ``XtX`` and ``A`` (p, p); ``blocks`` list of (slice, S_k) with the penalties that
    ``lambdas`` (K,) multiply; ``phi``; ``n`` rows; ``C`` (m, p) contrasts; ``fixed`` (K,) bool.
    """
    A = np.asarray(A, float)
    Ainv = np.linalg.inv(A)
    Ainv = 0.5 * (Ainv + Ainv.T)
    K = len(blocks)
    sl = [s for s, _ in blocks]
    lambdas = np.asarray(lambdas, float)
    fixed = np.zeros(K, bool) if fixed is None else np.asarray(fixed, bool)
    T = np.vstack([np.eye(K + 1)[k] for k in range(K) if not fixed[k]]
                  + [np.r_[np.where(fixed, 1.0 / lambdas, 0.0), 1.0]])
    IE2 = T @ penalized_information(XtX, Ainv, blocks, phi, n) @ T.T
    W = 2.0 * _pinv_sym(IE2)
    C = np.atleast_2d(np.asarray(C, float))
    Vp = phi * Ainv
    var = np.einsum("ij,jk,ik->i", C, Vp, C)
    CA = C @ Ainv                                        # (m, p)
    g = np.empty((C.shape[0], K + 1))
    for k in range(K):
        s = sl[k]
        g[:, k] = lambdas[k] ** 2 * np.einsum("ij,jk,ik->i", CA[:, s], blocks[k][1], CA[:, s])
    g[:, K] = np.einsum("ij,jk,ik->i", CA, XtX, CA)
    g = g @ T.T
    den = np.einsum("ik,kl,il->i", g, W, g)
    return np.sqrt(np.maximum(var, 0.0)), _df(var, den)
