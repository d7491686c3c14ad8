"""GAMM: additive model with treatment-by-smooth interactions and a cluster random intercept.

Paper label **GAMM**. R original (spec §3.10): ``mgcv``::

    gam(Y ~ A + s(x_k) + s(x_k, by = A) + ... + x_bin + A:x_bin + v_l + A:v_l
          + s(cluster, bs = "re"), method = "REML")

The CATE is the population-level contrast with the random intercept excluded,
``tau(x, v) = (X_p(A = 1) - X_p(A = 0)) beta``, with a 95% t interval ``tau -+ t_{df, 0.975} se``,
``se`` from the Bayesian posterior covariance ``Vp = phi (X'X + S_lambda)^{-1}`` (mgcv's
``vcov(fit)``); the ATE over the prediction rows gets the interval of the averaged contrast
(``info["ate_interval"]``, ``info["ate_df"]``; per-row df in ``info["df"]``).

Degrees of freedom (``ddf``; :func:`clusterhte.mixed.ddf.penalized_satterthwaite`)
-------------------------------------------------------------------------------
mgcv has no small-sample df for predictions (``predict(se.fit = TRUE)`` and +-2 se). With 10
clusters that z interval covers the ATE in 0.86 of trials, because ``c'Vp c`` is driven by the
estimated cluster variance and scale, whose uncertainty is of order ``1/J``. The analogue used
here is the Satterthwaite df of the linear combination ``c'beta`` in the mixed-model
representation of the GAMM (penalised spline coefficients and the cluster intercepts as random
effects): ``df = 2 (c'Vp c)^2 / (g' W g)``, ``g`` the gradient of ``c'Vp c`` in the variance
parameters and ``W`` their inverse expected REML information.

* ``"satterthwaite"`` (default): conditional on the fitted smoothing parameters of the smooths, as
  mgcv's ``Vp`` is; the cluster variance and the scale are treated as estimated. For a
  contrast driven by cluster-level information (the ATE in a CRT) this gives about
  ``J - (cluster-level coefficients)`` df (4 with 10 clusters and 6 cluster-level terms, 33 with
  40); with a ridge block only it is exactly the LMM's Satterthwaite df with the expected
  information, which equals pbkrtest's Kenward-Roger df (tests/test_ddf.py). Checked by coverage
  on the battery (tests/test_small_trials.py): 10 clusters, 199 trials, ATE coverage 0.945
  (z: 0.864), pointwise 0.935 (z: 0.873).
* ``"satterthwaite-unconditional"``: the smoothing parameters also count as estimated. A smooth
  estimated as linear (``lambda`` at its upper bound) then contributes its whole potential
  curvature and rows at the edges get df near 1: intervals about 1.6-2.5 times wider on the
  40-cluster scenarios, pointwise coverage 0.95-0.98 instead of 0.93-0.98.
* ``"none"``: z intervals (the behaviour before small-sample df were added).

Aliased parametric columns (a binary cluster covariate equal to the arm, or ``A x V`` all zero)
are dropped with an :class:`~clusterhte.mixed.design.AliasedColumnsWarning` naming them (R's
in-order rank test, as mgcv/lm), listed in ``info["dropped"]``. A penalised design that is still
nearly singular (scaled pivot of ``X'X + S`` below 1e-12; fits on the battery have 5e-9 or more,
the 10-cluster fits that used to return SEs of 1e6 or more had 5e-16) raises a ``TrialDataError``
instead of returning a meaningless SE.

A trial with as many clusters as the parametric part has independent cluster-level columns is
refused with a :class:`~clusterhte.data.trial.TrialDataError`, as for the LMM
(:func:`clusterhte.mixed.design.require_between_cluster_df`): the cluster variance is then not
identified and the conditional df of cluster-level contrasts come out near ``n`` (124 for the
ATE of a 6-cluster trial whose intervals covered 46% of the true CATEs).

Fitting: penalised least squares ``||y - X beta||^2 + sum_k lambda_k beta' S_k beta`` with every
penalised block a variance component (the mixed-model representation of penalised splines) and the
cluster random intercept one more (ridge) block. The smoothing parameters maximise the Gaussian
restricted likelihood (Wood 2011, JRSS-B 73(1), eq. 4, with the scale ``phi`` profiled out)::

    V(rho) = (n - M_p)/2 log D + 1/2 log|X'X + S_lambda| - 1/2 sum_k r_k log lambda_k
    D = ||y - X beta||^2 + beta' S_lambda beta,   phi = D / (n - M_p)

(``M_p`` = dimension of the unpenalised space, ``r_k = rank S_k``), minimised over
``rho = log lambda`` by L-BFGS-B with the exact gradient
``dV/drho_k = (n - M_p)/2 lambda_k beta'S_k beta / D + 1/2 lambda_k tr((X'X + S)^{-1} S_k) - r_k/2``.
With one ridge block this is exactly the REML fit of the random-intercept linear mixed model;
``method = "GCV"`` minimises ``n RSS / (n - tr H)^2`` instead (mgcv's ``method = "GCV.Cp"``).

Differences from the R original
-------------------------------
* t intervals with Satterthwaite df (above) instead of mgcv's normal-theory intervals.
* Smooths are cubic P-splines (mgcv ``bs = "ps"``, ``k = n_basis`` = 6, second-order difference
  penalty) instead of mgcv's default thin-plate regression splines; knots equally spaced over the
  training range, linear extension outside it (:mod:`.splines`).
* Every smooth, including ``s(x, by = A)``, is centred (sum-to-zero over the training rows, over the
  treated rows for the ``by = A`` smooth) so that the ``A`` main effect stays identifiable; mgcv
  leaves numeric-``by`` smooths uncentred and relies on its side-constraint handling.
* Individual covariates with fewer than ``min_unique_smooth`` distinct values (binary ones) and all
  cluster covariates enter linearly with a treatment interaction, as the spec's formula.
* Penalties are scaled like mgcv's (``||S_k|| = ||X_k'X_k||``) before optimisation; the reported
  ``lambda`` are on that scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from clusterhte.data.trial import TrialData, TrialDataError
from clusterhte.methods.base import CateResult, Estimator, MethodError
from clusterhte.methods.splines import BSplineBasis, difference_penalty, sum_to_zero_constraint
from clusterhte.mixed.ddf import penalized_satterthwaite, t_interval
from clusterhte.mixed.design import drop_aliased, require_between_cluster_df

Z975 = float(stats.norm.ppf(0.975))
RHO_BOUNDS = (-15.0, 20.0)
GAMM_DDF = ("satterthwaite", "satterthwaite-unconditional", "none")
NEAR_SINGULAR = 1e-12   # smallest squared pivot of the diagonally scaled X'X + S accepted


# --------------------------------------------------------------------------------------------------
# penalised least squares with smoothing parameters by REML or GCV
# --------------------------------------------------------------------------------------------------
@dataclass
class PenalizedFit:
    beta: np.ndarray
    Vp: np.ndarray            # Bayesian posterior covariance phi (X'X + S)^{-1}
    phi: float                # scale (residual variance)
    lambdas: np.ndarray       # smoothing parameters (on the scaled penalties)
    edf: np.ndarray           # effective degrees of freedom per coefficient
    criterion: float          # REML V(rho) (without constants) or GCV score at the optimum
    converged: bool
    method: str


def _solve(XtX, Xty, yty, S_list, slices, rho):
    A = XtX.copy()
    lam = np.exp(rho)
    for l, S, sl in zip(lam, S_list, slices):
        A[sl, sl] += l * S
    try:
        L = np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return None
    beta = np.linalg.solve(L.T, np.linalg.solve(L, Xty))
    D = float(yty - beta @ Xty)
    return A, L, beta, max(D, 1e-300), lam


def _criteria(X: np.ndarray, y: np.ndarray, blocks: list[tuple[slice, np.ndarray]]):
    """Cross products and the REML (value, gradient) and GCV functions of ``rho = log lambda``."""
    n, p = X.shape
    XtX, Xty, yty = X.T @ X, X.T @ y, float(y @ y)
    slices = [sl for sl, _ in blocks]
    S_list = [np.asarray(S, dtype=float) for _, S in blocks]
    ranks = np.array([np.linalg.matrix_rank(S) for S in S_list], dtype=float)
    Mp = p - int(ranks.sum())
    K = len(blocks)

    def reml(rho):
        out = _solve(XtX, Xty, yty, S_list, slices, rho)
        if out is None:
            return np.inf, np.zeros(K)
        A, L, beta, D, lam = out
        Ainv = np.linalg.inv(A)
        val = 0.5 * (n - Mp) * np.log(D) + float(np.sum(np.log(np.diag(L)))) - 0.5 * float(ranks @ rho)
        g = np.array([0.5 * (n - Mp) * l * (beta[sl] @ S @ beta[sl]) / D + 0.5 * l * float(np.sum(Ainv[sl, sl] * S))
                      for l, S, sl in zip(lam, S_list, slices)]) - 0.5 * ranks
        return val, g

    def gcv(rho):
        out = _solve(XtX, Xty, yty, S_list, slices, rho)
        if out is None:
            return np.inf
        A, L, beta, D, lam = out
        rss = float(yty - 2 * beta @ Xty + beta @ XtX @ beta)
        trH = float(np.sum(np.linalg.inv(A) * XtX))
        return n * rss / max(n - trH, 1e-8) ** 2

    return dict(XtX=XtX, Xty=Xty, yty=yty, slices=slices, S_list=S_list, Mp=Mp, K=K, n=n,
                reml=reml, gcv=gcv)


def reml_criterion(X: np.ndarray, y: np.ndarray, blocks: list[tuple[slice, np.ndarray]],
                   rho: np.ndarray) -> tuple[float, np.ndarray]:
    """The profiled REML criterion ``V(rho)`` (constants dropped) and its exact gradient."""
    return _criteria(np.asarray(X, float), np.asarray(y, float), blocks)["reml"](np.asarray(rho, float))


def penalized_fit(X: np.ndarray, y: np.ndarray, blocks: list[tuple[slice, np.ndarray]],
                  method: str = "REML", rho0: np.ndarray | None = None) -> PenalizedFit:
    """Penalised least squares with one smoothing parameter per block ``(columns, S_k)``.

    The blocks must not overlap. ``method``: ``"REML"`` (restricted likelihood, exact gradient) or
    ``"GCV"``. With no blocks this is ordinary least squares.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    cr = _criteria(X, y, blocks)
    XtX, Xty, yty, S_list, slices = cr["XtX"], cr["Xty"], cr["yty"], cr["S_list"], cr["slices"]
    n, Mp, K, reml, gcv = cr["n"], cr["Mp"], cr["K"], cr["reml"], cr["gcv"]
    method = method.upper()

    if K == 0:
        rho, crit, ok = np.zeros(0), np.nan, True
    else:
        x0 = np.zeros(K) if rho0 is None else np.asarray(rho0, dtype=float)
        bounds = [RHO_BOUNDS] * K
        if method == "REML":
            res = optimize.minimize(reml, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                                    options=dict(maxiter=500, ftol=1e-14, gtol=1e-8))
        elif method == "GCV":
            res = optimize.minimize(gcv, x0, method="L-BFGS-B", bounds=bounds,
                                    options=dict(maxiter=500, ftol=1e-12, gtol=1e-6))
        else:
            raise MethodError(f"smoothing-parameter method must be 'REML' or 'GCV', got {method!r}")
        rho, crit, ok = res.x, float(res.fun), bool(res.success)
    out = _solve(XtX, Xty, yty, S_list, slices, rho)
    if out is None:
        raise TrialDataError("the penalised design is rank deficient (X'X + S is singular); "
                             "drop collinear covariates")
    A, L, beta, D, lam = out
    # near-singularity (an SE of 1e6 or more from a nearly aliased column): the reciprocal condition
    # number of the diagonally scaled A, bounded by its smallest scaled Cholesky pivot squared
    dA = 1.0 / np.sqrt(np.diag(A))
    piv = np.diag(L) * dA
    if piv.size and np.min(piv) ** 2 < NEAR_SINGULAR:
        raise TrialDataError(f"the penalised design is nearly singular (scaled pivot {np.min(piv) ** 2:.1e} "
                             f"< {NEAR_SINGULAR:g}); standard errors would be meaningless: drop or merge "
                             "nearly collinear covariates")
    Ainv = np.linalg.inv(A)
    edf_mat = Ainv @ XtX
    if method == "REML":
        phi = D / (n - Mp)
    else:
        rss = float(yty - 2 * beta @ Xty + beta @ XtX @ beta)
        phi = rss / (n - float(np.trace(edf_mat)))
    Vp = phi * Ainv
    return PenalizedFit(beta, 0.5 * (Vp + Vp.T), float(phi), lam, np.diag(edf_mat), crit, ok, method)


# --------------------------------------------------------------------------------------------------
# the model terms
# --------------------------------------------------------------------------------------------------
class _Terms:
    """Column layout of the GAMM design, fitted on the training rows (bases, constraints)."""

    def __init__(self, train: TrialData, n_basis: int, degree: int, diff_order: int, min_unique_smooth: int):
        F = train.frame
        A = train.treatment
        self.smooth, self.linear = [], []
        for c in train.individual_covariates:
            if np.unique(F[c].to_numpy(dtype=float)).size >= min_unique_smooth:
                self.smooth.append(c)
            else:
                self.linear.append(c)
        self.linear += list(train.cluster_covariates)
        n_inner = n_basis - degree - 1
        if n_inner < 0:
            raise MethodError(f"method 'gamm': hyperparameter 'n_basis' = {n_basis} must be at least degree + 1 = {degree + 1}")
        if not 1 <= diff_order < n_basis - 1:
            raise MethodError(f"method 'gamm': hyperparameter 'diff_order' = {diff_order} must be in [1, {n_basis - 2}]")
        self.bases, self.Z, self.Zby = {}, {}, {}
        P = difference_penalty(n_basis, diff_order)
        self.S, self.Sby = {}, {}
        for c in self.smooth:
            x = F[c].to_numpy(dtype=float)
            b = BSplineBasis(n_inner, degree).fit(x)
            B = b.transform(x)
            self.bases[c] = b
            self.Z[c] = sum_to_zero_constraint(B)
            self.Zby[c] = sum_to_zero_constraint(B, weights=A)
            self.S[c] = self.Z[c].T @ P @ self.Z[c]
            self.Sby[c] = self.Zby[c].T @ P @ self.Zby[c]
        # names and slices
        names = ["(Intercept)", "treatment"] + self.linear + [f"treatment:{c}" for c in self.linear]
        self.blocks: list[tuple[str, slice, np.ndarray]] = []
        pos = len(names)
        for c in self.smooth:
            for lab, S in ((f"s({c})", self.S[c]), (f"s({c}, by = treatment)", self.Sby[c])):
                k = S.shape[0]
                self.blocks.append((lab, slice(pos, pos + k), S))
                names += [f"{lab}.{i + 1}" for i in range(k)]
                pos += k
        self.names = names
        self.p_fixed = pos

    def design(self, data: TrialData, A=None) -> np.ndarray:
        """Design without the random-intercept columns."""
        F = data.frame
        A = data.treatment if A is None else np.broadcast_to(np.asarray(A, dtype=float), (data.n,))
        lin = data.X(self.linear) if self.linear else np.empty((data.n, 0))
        cols = [np.ones(data.n), A, lin, A[:, None] * lin]
        for c in self.smooth:
            B = self.bases[c].transform(F[c].to_numpy(dtype=float))
            cols += [B @ self.Z[c], (B @ self.Zby[c]) * A[:, None]]
        return np.column_stack(cols)


# --------------------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------------------
class GAMM(Estimator):
    """Additive mixed model S-learner with ``by = A`` smooths; CATE = contrast of the design rows.

    Hyperparameters
    ---------------
    n_basis : basis functions per smooth (spec §4.5: 6).
    degree, diff_order : B-spline degree (3) and difference-penalty order (2) of the P-splines.
    method : smoothing-parameter selection, ``"REML"`` (default, mgcv ``method = "REML"``) or ``"GCV"``.
    min_unique_smooth : individual covariates with fewer distinct values enter linearly.
    random_effect : include the penalised cluster random intercept (``s(cluster, bs = "re")``).
    ddf : ``"satterthwaite"`` (default): t intervals with the Satterthwaite df of each contrast,
        conditional on the smooths' smoothing parameters (:func:`clusterhte.mixed.ddf.penalized_satterthwaite`);
        ``"satterthwaite-unconditional"``: every smoothing parameter counted as estimated;
        ``"none"``: z intervals (mgcv's ``predict(se.fit = TRUE)`` +- 1.96 se). With
        ``method = "GCV"`` the df use the same REML information, evaluated at the GCV estimates.
    """

    name = "gamm"
    label = "GAMM"
    designs = ("crt",)
    has_intervals = True
    library = "numpy/scipy (own penalised-REML fit, mgcv-style)"

    def __init__(self, n_basis: int = 6, degree: int = 3, diff_order: int = 2, method: str = "REML",
                 min_unique_smooth: int = 10, random_effect: bool = True, ddf: str = "satterthwaite",
                 random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())
        if ddf not in GAMM_DDF:
            raise MethodError(f"method 'gamm': hyperparameter 'ddf' must be one of {list(GAMM_DDF)}, got {ddf!r}")
        if not isinstance(method, str) or method.upper() not in ("REML", "GCV"):
            raise MethodError(f"method 'gamm': hyperparameter 'method' must be 'REML' or 'GCV', got {method!r}")
        for hp in ("n_basis", "degree", "diff_order", "min_unique_smooth"):
            v = getattr(self, hp)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or int(v) != v or v < 1:
                raise MethodError(f"method 'gamm': hyperparameter '{hp}' must be a positive integer, got {v!r}")
        if n_basis < degree + 2:
            raise MethodError(f"method 'gamm': hyperparameter 'n_basis' = {n_basis} must be at least "
                              f"degree + 2 = {degree + 2}")

    def _fit(self, train: TrialData) -> None:
        train.validate()
        self.terms_ = _Terms(train, int(self.n_basis), int(self.degree), int(self.diff_order),
                             int(self.min_unique_smooth))
        Xf = self.terms_.design(train)
        # aliased parametric columns (e.g. a binary cluster covariate equal to the arm) are dropped
        # as mgcv/lm do (in-order rank test); all parametric columns come before the smooths
        n_par = 2 + 2 * len(self.terms_.linear)
        _, keep_par, self.dropped_ = drop_aliased(Xf[:, :n_par], self.terms_.names[:n_par],
                                                  f"{train.name}: method 'gamm'")
        self.keep_ = np.r_[keep_par, np.ones(Xf.shape[1] - n_par, dtype=bool)]
        shift = n_par - int(keep_par.sum())
        Xf = Xf[:, self.keep_]
        self.blocks_ = [(lab, slice(sl.start - shift, sl.stop - shift), S) for lab, sl, S in self.terms_.blocks]
        blocks = [(sl, S) for _, sl, S in self.blocks_]
        X = Xf
        if self.random_effect:
            codes = train.cluster_codes
            par_names = [nm for nm, k in zip(self.terms_.names[:n_par], keep_par) if k]
            require_between_cluster_df(Xf[:, :len(par_names)], codes, par_names, f"{train.name}: method 'gamm'",
                                       "Use fewer cluster covariates (each enters with its treatment "
                                       "interaction).")
            J = int(codes.max()) + 1
            Zre = np.zeros((train.n, J))
            Zre[np.arange(train.n), codes] = 1.0
            X = np.column_stack([Xf, Zre])
            blocks.append((slice(Xf.shape[1], Xf.shape[1] + J), np.eye(J)))
        # scale every penalty like mgcv: ||S_k||_F = ||X_k'X_k||_F
        self.scales_ = []
        scaled = []
        for sl, S in blocks:
            XtX = X[:, sl].T @ X[:, sl]
            sc = np.linalg.norm(XtX) / np.linalg.norm(S)
            self.scales_.append(sc)
            scaled.append((sl, S * sc))
        try:
            self.fit_ = penalized_fit(X, train.outcome, scaled, method=self.method)
        except TrialDataError as e:
            raise TrialDataError(f"{train.name}: method 'gamm': {e}") from None
        self.p_fixed_ = Xf.shape[1]
        self.covariates_ = list(train.covariates)
        # ingredients of the small-sample df (penalized_satterthwaite)
        self.XtX_ = X.T @ X
        self.A_ = self.XtX_.copy()
        for lam, (sl, S) in zip(self.fit_.lambdas, scaled):
            self.A_[sl, sl] += lam * S
        self.scaled_blocks_ = scaled
        self.n_ = train.n

    def _inference(self, C):
        """(se, df) of the contrasts ``C`` (rows over the fixed columns) under ``ddf``."""
        fit = self.fit_
        Cf = np.zeros((C.shape[0], fit.beta.size))
        Cf[:, :self.p_fixed_] = C
        if self.ddf == "none":
            se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", Cf, fit.Vp, Cf), 0.0))
            return se, np.full(se.shape, np.inf)
        fixed = np.zeros(len(self.scaled_blocks_), bool)
        if self.ddf == "satterthwaite":       # smoothing parameters of the smooths held fixed
            fixed[:len(self.blocks_)] = True
        return penalized_satterthwaite(self.XtX_, self.A_, self.scaled_blocks_, fit.lambdas, fit.phi,
                                       self.n_, Cf, fixed=fixed)

    def _predict(self, test: TrialData) -> CateResult:
        missing = [c for c in self.covariates_ if c not in test.frame.columns]
        if missing:
            raise MethodError(f"method 'gamm': prediction table {test.name} lacks covariate column(s) {missing}")
        fit = self.fit_
        p = self.p_fixed_
        C = (self.terms_.design(test, 1.0) - self.terms_.design(test, 0.0))[:, self.keep_]
        beta = fit.beta[:p]
        point = C @ beta
        se, df = self._inference(C)
        lo, hi = t_interval(point, se, df)
        cbar = C.mean(axis=0, keepdims=True)
        ase, adf = self._inference(cbar)
        ate = float((cbar @ beta)[0])
        alo, ahi = t_interval(ate, ase[0], adf[0])
        labels = [lab for lab, _, _ in self.blocks_] + (["s(cluster, bs = 're')"] if self.random_effect else [])
        all_slices = [sl for _, sl, _ in self.blocks_]
        if self.random_effect:
            all_slices.append(slice(p, fit.beta.size))
        info = {"ate_interval": (float(alo), float(ahi)), "ate_se": float(ase[0]), "ate_df": float(adf[0]),
                "se": se, "df": df, "ddf": self.ddf, "dropped": list(self.dropped_),
                "sigma2": fit.phi, "lambda": dict(zip(labels, map(float, fit.lambdas))),
                "edf": {lab: float(fit.edf[sl].sum()) for lab, sl in zip(labels, all_slices)},
                "converged": fit.converged, "smooth_terms": list(self.terms_.smooth),
                "linear_terms": list(self.terms_.linear)}
        if self.random_effect:
            info["tau2"] = float(fit.phi / (fit.lambdas[-1] * self.scales_[-1]))
        return CateResult(point, lo, hi, info=info)
