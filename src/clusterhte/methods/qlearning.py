"""Q-learning estimators of the benefit score for multisite trials (Suk & Park 2023, Section 4).

Seven linear outcome models, each giving the benefit score (the CATE on the outcome scale)
``Delta(x) = gamma_trt + M' gamma_M`` from the coefficients of the treatment and of the
moderator-by-treatment products; treatment is recommended iff ``Delta > 0``.

======== ============ ==============================================================================
name     paper label  model (``X`` = level-1 covariates, ``M`` = moderators, ``T`` = 0/1 treatment)
======== ============ ==============================================================================
q-base   Q-base       OLS ``Y ~ X + T + M:T``
q-fe     Q-fe         OLS ``Y ~ X + T + M:T + cluster``  (cluster fixed effects)
q-ri     Q-ri         REML ``Y ~ X + T + M:T + (1 | cluster)``; score from the fixed effects
q-rs     Q-rs         REML ``Y ~ X + T + M:T + (T | cluster)``; score adds the cluster's slope BLUP
q-dm     Q-dm         OLS of de-meaned ``Y`` on de-meaned ``X``, ``T`` and ``M*T`` products
q-dm-ri  Q-dm-ri      REML: raw ``Y`` on de-meaned ``X``, ``T``, ``M*T`` + ``(1 | cluster)``
q-dm-rs  Q-dm-rs      REML: raw ``Y`` on de-meaned predictors + ``(T_dm | cluster)`` (de-meaned slope)
======== ============ ==============================================================================

Reference implementation: ``Qlearn()`` in ``Simulation/Qlearn.R`` of github.com/youmisuk/multisiteOTR
(lm / lme4::lmer). This module follows it exactly (spec ``otr_multisite.md`` Sec. 1):

* **Level-2 detection.** Main effects are ``individual_covariates + cluster_covariates`` of the
  training table minus every column that takes one value within every training cluster; such
  columns never enter any Q model (R: the unused ``W_lvl2``).
* **Moderators** (``train.moderators``) must be level-1 main-effect columns (else ``MethodError``).
* **De-meaning** (Q-dm*) subtracts the training-cluster mean from every column, including ``Y``
  (Q-dm only), ``T`` and the *products* ``M*T`` (de-meaned product, not product of de-meaned).
  Q-dm keeps an intercept (estimated ~0) like ``lm``; Q-dm-ri / Q-dm-rs regress the **raw** ``Y``.
* **Scores always use the raw test moderators**, never de-meaned ones; Q-ri's random intercept
  never enters the score; Q-rs / Q-dm-rs add the predicted random slope (BLUP) of the test row's
  cluster to ``gamma_trt``.
* Q-fe, Q-dm and Q-dm-ri give identical scores (Frisch-Waugh-Lovell; within-centred predictors are
  orthogonal to the random-intercept covariance), a property the tests check.

Differences from the R code
---------------------------
* Q-fe is fitted by the within transformation (de-meaning), not with ``J - 1`` dummy columns; the
  coefficients of ``T`` and ``M:T`` are identical (Frisch-Waugh-Lovell).
* Mixed models use :func:`clusterhte.mixed.reml.fit_lmm` (REML, lme4's profiled criterion and
  parametrisation, L-BFGS-B with an exact gradient instead of BOBYQA); singular fits are returned,
  flagged in ``info["singular"]``, as lme4 does with its "boundary (singular) fit" message.
* Test clusters are matched to training clusters **by label**. A test cluster not seen in training
  gets slope BLUP 0 (the population slope) and is counted in ``info["n_unseen_clusters"]``. The R
  code indexes ``coef(fit)$IDfactor`` by the integer codes of the test factor, which is right only
  when the test clusters are exactly the training clusters and silently misaligns otherwise.
* A rank-deficient design raises ``MethodError`` naming the aliased columns (R's ``lm`` would
  return ``NA`` coefficients and ``NA`` scores).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from clusterhte.data.trial import TrialData
from clusterhte.methods.base import CateResult, Estimator, MethodError
from clusterhte.mixed.design import independent_columns
from clusterhte.mixed.reml import LMMError, fit_lmm

__all__ = ["QBase", "QFe", "QRi", "QRs", "QDm", "QDmRi", "QDmRs", "level2_columns", "QDesign",
           "prepare"]


# --------------------------------------------------------------------------- shared design
class QDesign:
    """Training design shared by the Q models.

    Attributes: ``y`` (n,), ``trt`` (n,), ``X`` (n, k) level-1 main effects ``main_names``,
    ``MT`` (n, m) products moderator * trt, ``moderators``, ``level2`` (dropped columns),
    ``codes`` (n,) cluster codes 0..J-1, ``labels`` (J,) sorted cluster labels.
    """

    def __init__(self, train: TrialData):
        covs = list(train.covariates)
        self.codes, labels = train.cluster_factors()
        self.labels = np.asarray(labels)
        self.J = self.labels.size
        self.n = train.n
        Xall = train.X(covs)
        l2 = level2_columns(Xall, self.codes, self.J)
        self.level2 = [c for c, f in zip(covs, l2) if f]
        self.main_names = [c for c, f in zip(covs, l2) if not f]
        self.X = Xall[:, ~l2]
        self.moderators = list(train.moderators)
        for m in self.moderators:
            if m not in self.main_names:
                why = ("it is constant within every training cluster (a level-2 column)"
                       if m in self.level2 else f"it is not a covariate of {train.name}")
                raise MethodError(
                    f"moderator '{m}' must be a level-1 main-effect column, but {why}; "
                    f"level-1 columns: {self.main_names}")
        idx = [self.main_names.index(m) for m in self.moderators]
        self.y = train.outcome
        self.trt = train.treatment
        self.MT = self.X[:, idx] * self.trt[:, None]
        self.names = self.main_names + ["trt"] + [f"{m}:trt" for m in self.moderators]
        self._onehot = None

    @property
    def predictors(self) -> np.ndarray:
        """(n, k + 1 + m) raw predictors ``[X, trt, M*trt]`` (no intercept)."""
        return np.column_stack([self.X, self.trt, self.MT])

    def demean(self, A: np.ndarray) -> np.ndarray:
        """``A`` minus its training-cluster means (R: ``x - ave(x, IDfactor)``), column by column."""
        if self._onehot is None:
            S = sp.csr_matrix((np.ones(self.n), (self.codes, np.arange(self.n))), shape=(self.J, self.n))
            cnt = np.bincount(self.codes, minlength=self.J).astype(float)
            self._onehot = (S, cnt)
        S, cnt = self._onehot
        A = np.asarray(A, dtype=float)
        means = (S @ A) / (cnt[:, None] if A.ndim == 2 else cnt)
        return A - means[self.codes]


def prepare(train: TrialData) -> QDesign:
    """Level-2 detection, moderator checks and the raw design (spec Sec. 1.1)."""
    return QDesign(train)


def level2_columns(X: np.ndarray, codes: np.ndarray, J: int) -> np.ndarray:
    """Boolean (k,): column takes exactly one value within every cluster (spec Sec. 1.1)."""
    X = np.asarray(X, dtype=float)
    if X.shape[1] == 0:
        return np.zeros(0, dtype=bool)
    if np.all(codes[1:] >= codes[:-1]):  # rows already grouped by cluster (the OTR chunks)
        cs, Xs = codes, X
    else:
        order = np.argsort(codes, kind="stable")
        cs, Xs = codes[order], X[order]
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    lo = np.minimum.reduceat(Xs, starts, axis=0)
    hi = np.maximum.reduceat(Xs, starts, axis=0)
    return np.all(lo == hi, axis=0)


def _pivoted_qr(D: np.ndarray):
    """(Q, R, piv, rank) of the pivoted QR of ``D``; rank with ``matrix_rank``'s tolerance
    (largest |R_ii| x max(n, p) x eps)."""
    Qm, R, piv = scipy.linalg.qr(D, mode="economic", pivoting=True, check_finite=False)
    d = np.abs(np.diag(R))
    tol = d[0] * max(D.shape) * np.finfo(float).eps if d.size else 0.0
    return Qm, R, piv, int(np.sum(d > tol))


def _clearly_full_rank(D: np.ndarray, max_cond: float = 1e6) -> bool:
    """True when ``D`` has full column rank with condition number below ``max_cond``, judged from
    the eigenvalues of ``D'D`` (one pass over D instead of a pivoted QR).

    Then the pivoted QR's rank test (:func:`_pivoted_qr`: ``|R_kk| > |R_11| max(n, p) eps``)
    passes too, because every diagonal entry of a QR factor satisfies ``|R_kk| >= sigma_min(D)``
    and ``|R_11| <= sigma_max(D)``, and ``max_cond = 1e6`` is far below ``1 / (max(n, p) eps)``
    for any table this package fits (the eigenvalues of ``D'D`` are accurate to about
    ``eps * lambda_max``, i.e. to condition numbers near 1e7). False means "not sure": the caller
    runs the pivoted QR.
    """
    if D.shape[1] == 0 or D.shape[0] < D.shape[1]:
        return False
    lam = np.linalg.eigvalsh(D.T @ D)
    return bool(lam[0] > 0 and lam[-1] <= max_cond * max_cond * lam[0])


def _check_rank(D: np.ndarray, names: list[str], method: str, qr=None):
    """Pivoted QR of ``D``; raise MethodError naming aliased columns if it is rank deficient."""
    Qm, R, piv, rank = _pivoted_qr(D) if qr is None else qr
    if rank < D.shape[1]:
        bad = [names[i] for i in sorted(piv[rank:])]
        raise MethodError(f"method '{method}': the design is rank deficient; aliased column(s) {bad} "
                          "(collinear covariates, or a moderator with no variation among the treated)")
    return Qm, R, piv


def r_aliased(D: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """Columns R's ``lm`` would report as aliased (NA): the in-order rank test of LINPACK
    ``dqrdc2`` (earlier columns kept, a later column aliased when its residual after projection on
    the kept ones is below ``tol`` times its norm), shared with the LMM/GAMM
    (:func:`clusterhte.mixed.design.independent_columns`)."""
    return ~independent_columns(D, tol)


def _ols(D: np.ndarray, y: np.ndarray, names: list[str], method: str, qr=None) -> np.ndarray:
    """Least squares by the pivoted QR decomposition (R's ``lm`` uses a pivoted QR too);
    ``qr``: the decomposition of ``D`` when already computed."""
    Qm, R, piv = _check_rank(D, names, method, qr)
    b = np.empty(D.shape[1])
    b[piv] = scipy.linalg.solve_triangular(R, Qm.T @ y, check_finite=False)
    return b


# --------------------------------------------------------------------------- estimators
class _QLearner(Estimator):
    """Shared fit/predict; subclasses set ``_demean_x``, ``_model`` ('ols' | 'fe' | 'lmm') and
    ``_slope`` (random treatment slope)."""

    designs = ("multisite",)
    has_intervals = False
    library = "numpy/scipy (OLS by pivoted QR; REML via clusterhte.mixed.reml)"
    _model = "ols"
    _demean_x = False
    _demean_y = False
    _slope = False

    def _model_design(self, d: QDesign, P: np.ndarray) -> np.ndarray:
        if self._model == "fe":
            return d.demean(P)
        Pm = d.demean(P) if self._demean_x else P
        return np.column_stack([np.ones(d.n), Pm])

    def _fit(self, train: TrialData) -> None:
        d = prepare(train)
        P = d.predictors
        k = d.X.shape[1]
        self.design_ = d
        info: dict = {"level2_dropped": list(d.level2), "main_effects": list(d.main_names)}
        # Main-effect covariates that are linear combinations of earlier columns are dropped, as
        # R's lm reports them as NA (they do not enter the score). An aliased treatment or
        # moderator-by-treatment column is an error.
        D = self._model_design(d, P)
        off = 0 if self._model == "fe" else 1
        # The mixed models use the decomposition only to test the rank: a clearly full-rank design
        # (the usual case) needs no pivoted QR (~5 ms at 22,500 rows); OLS solves with it.
        full = self._model == "lmm" and _clearly_full_rank(D)
        qr = None if full else _pivoted_qr(D)
        if not full and qr[3] < D.shape[1]:
            alias = r_aliased(D)
            bad = [n for n, a in zip(([] if off == 0 else ["(Intercept)"]) + d.names, alias) if a]
            main_alias = alias[off:off + k]
            if alias[:off].any() or alias[off + k:].any():
                raise MethodError(f"method '{self.name}': the design is rank deficient; aliased column(s) {bad} "
                                  "(collinear covariates, or a moderator with no variation among the treated)")
            keep_main = ~main_alias
            d.X = d.X[:, keep_main]
            d.main_names = [c for c, kpt in zip(d.main_names, keep_main) if kpt]
            d.names = d.main_names + d.names[k:]
            info["aliased_dropped"] = bad
            info["main_effects"] = list(d.main_names)
            P = d.predictors
            k = d.X.shape[1]
            D = self._model_design(d, P)
            qr = None
        names = ["(Intercept)"] + d.names
        if self._model == "fe":
            coef = _ols(D, d.demean(d.y), d.names + [], self.name, qr)
            coef = np.r_[np.nan, coef]  # no intercept in the within model
        elif self._model == "ols":
            yy = d.demean(d.y) if self._demean_y else d.y
            coef = _ols(D, yy, names, self.name, qr)
        else:
            Pm = D[:, 1:]
            if qr is None and not full:
                _check_rank(D, names, self.name)
            Z = np.column_stack([np.ones(d.n), Pm[:, k]]) if self._slope else None
            try:
                res = fit_lmm(d.y, D, train.cluster, Z, reml=self.reml)
            except LMMError as e:
                raise MethodError(f"method '{self.name}': {e}") from e
            coef = res.beta
            self.lmm_ = res
            info.update(G=res.G.tolist(), sigma2=res.sigma2, singular=res.singular,
                        converged=res.converged, llf=res.llf, theta=res.theta.tolist(),
                        n_iter=res.n_iter)
        self.coef_ = pd.Series(coef, index=names)
        self.gamma_trt_ = float(coef[1 + k])
        self.gamma_mod_ = np.asarray(coef[2 + k:], dtype=float)
        self.info_ = info

    def _predict(self, test: TrialData) -> CateResult:
        d = self.design_
        missing = [m for m in d.moderators if m not in test.frame.columns]
        if missing:
            raise MethodError(f"method '{self.name}': moderator column(s) {missing} missing from {test.name}")
        M = test.X(d.moderators)
        point = self.gamma_trt_ + M @ self.gamma_mod_
        info = dict(self.info_, gamma_trt=self.gamma_trt_,
                    gamma_moderators=dict(zip(d.moderators, self.gamma_mod_.tolist())))
        if self._slope:
            b = self.lmm_.blup_for(test.cluster)[:, 1]
            seen = pd.Index(self.lmm_.groups_).get_indexer(pd.unique(test.cluster)) >= 0
            info["n_unseen_clusters"] = int(np.sum(~seen))
            point = point + b
        return CateResult(point=point, cutoff=0.0, info=info)


class QBase(_QLearner):
    """Q-base: OLS ``Y ~ X + T + M:T``; score ``gamma_T + M'gamma_{M:T}`` (R: ``Qlearn(method="Q-lm")``)."""

    name = "q-base"
    label = "Q-base"

    def __init__(self, random_state=None):
        super().__init__(random_state)


class QFe(_QLearner):
    """Q-fe: OLS with cluster fixed effects ``Y ~ X + T + M:T + cluster`` (R: ``"Q-fe"``).

    Fitted by the within transformation (identical ``T`` and ``M:T`` coefficients to J-1 dummies).
    """

    name = "q-fe"
    label = "Q-fe"
    _model = "fe"

    def __init__(self, random_state=None):
        super().__init__(random_state)


class QDm(_QLearner):
    """Q-dm: OLS of de-meaned ``Y`` on de-meaned ``X``, ``T`` and ``M*T`` products, with an
    intercept (R: ``"Q-dm"``); score from the raw test moderators."""

    name = "q-dm"
    label = "Q-dm"
    _demean_x = True
    _demean_y = True

    def __init__(self, random_state=None):
        super().__init__(random_state)


class QRi(_QLearner):
    """Q-ri: ``lmer(Y ~ X + T + M:T + (1 | cluster))`` by REML (R: ``"Q-ri"``).

    The score uses only fixed effects (the random intercept never enters it).
    ``reml=False`` fits by ML instead (lme4's default is REML).
    """

    name = "q-ri"
    label = "Q-ri"
    _model = "lmm"

    def __init__(self, reml: bool = True, random_state=None):
        super().__init__(random_state)
        self.reml = reml


class QRs(_QLearner):
    """Q-rs: ``lmer(Y ~ X + T + M:T + (T | cluster))`` by REML, correlated random intercept and
    treatment slope (R: ``"Q-rs"``). Score for a row of cluster j:
    ``(gamma_T + u_{T,j}) + M'gamma_{M:T}`` with ``u_{T,j}`` the slope BLUP (0 for unseen clusters).
    """

    name = "q-rs"
    label = "Q-rs"
    _model = "lmm"
    _slope = True

    def __init__(self, reml: bool = True, random_state=None):
        super().__init__(random_state)
        self.reml = reml


class QDmRi(_QLearner):
    """Q-dm-ri: ``lmer(Y ~ X_dm + T_dm + (M*T)_dm + (1 | cluster))`` with the RAW outcome and
    de-meaned predictors, REML (R: ``"Q-dm-ri"``); score from the fixed effects."""

    name = "q-dm-ri"
    label = "Q-dm-ri"
    _model = "lmm"
    _demean_x = True

    def __init__(self, reml: bool = True, random_state=None):
        super().__init__(random_state)
        self.reml = reml


class QDmRs(_QLearner):
    """Q-dm-rs: ``lmer(Y ~ X_dm + T_dm + (M*T)_dm + (T_dm | cluster))``: raw outcome, de-meaned
    predictors, correlated random intercept and random slope on the DE-MEANED treatment, REML
    (R: ``"Q-dm-rs"``). Score: ``(gamma_T + u_{T,j}) + M'gamma_{M:T}`` with raw test moderators."""

    name = "q-dm-rs"
    label = "Q-dm-rs"
    _model = "lmm"
    _demean_x = True
    _slope = True

    def __init__(self, reml: bool = True, random_state=None):
        super().__init__(random_state)
        self.reml = reml
