"""LMM: the linear mixed model a trial statistician fits, the baseline of the CRT study.

Paper label **LMM** (reference method). R original: ``lme4::lmer`` (REML)::

    lmer(Y ~ A + X + V + A:X + A:V + (1 | cluster), REML = TRUE)

The CATE is the population-level treatment contrast (random intercept zero, which cancels
anyway): ``tau(x, v) = beta_A + x' beta_{A:X} + v' beta_{A:V}``. Its 95% Wald interval per row is
``tau +- z_{0.975} sqrt(c' Cov(beta) c)`` with ``c`` the contrast row; the ATE over the
prediction rows gets the Wald interval of the averaged contrast (``info["ate_interval"]``).

Fitting uses :func:`clusterhte.mixed.reml.fit_lmm` (the lme4 criterion, profiled REML).

Differences from the R original
-------------------------------
* Intervals are Wald z-intervals (normal quantile), as ``confint(method = "Wald")`` in lme4;
  no Kenward-Roger or Satterthwaite small-sample degrees of freedom.
* Covariates in ``interactions`` (default: all) interact with treatment; others enter as main
  effects only.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from clusterhte.data.trial import TrialData, TrialDataError
from clusterhte.methods.base import CateResult, Estimator, MethodError, OutcomePrediction
from clusterhte.mixed.reml import LMMError, fit_lmm

Z975 = float(stats.norm.ppf(0.975))


def wald(point: np.ndarray, C: np.ndarray, cov: np.ndarray, z: float = Z975):
    """Point, lower, upper and standard error for contrasts ``C beta`` with covariance ``cov``."""
    se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", C, cov, C), 0.0))
    return point - z * se, point + z * se, se


class LMM(Estimator):
    """Random-intercept linear mixed model with treatment-by-covariate interactions, fitted by REML.

    Hyperparameters
    ---------------
    interactions : covariate names that interact with treatment; ``None`` = every covariate,
        ``[]`` = none (constant CATE = the adjusted ATE).
    reml : REML (True, lme4's default) or ML.
    """

    name = "lmm"
    label = "LMM"
    designs = ("crt",)
    has_intervals = True
    library = "numpy/scipy (clusterhte.mixed.reml, lme4 criterion)"

    def __init__(self, interactions: list | None = None, reml: bool = True, random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())
        if interactions is not None and (not isinstance(interactions, (list, tuple))
                                         or not all(isinstance(c, str) for c in interactions)):
            raise MethodError(f"method 'lmm': hyperparameter 'interactions' must be a list of covariate "
                              f"names or null, got {interactions!r}")
        if not isinstance(reml, (bool, np.bool_)):
            raise MethodError(f"method 'lmm': hyperparameter 'reml' must be true/false, got {reml!r}")

    # ------------------------------------------------------------------ design
    def _interacting(self, train: TrialData) -> list[str]:
        if self.interactions is None:
            return list(train.covariates)
        if not isinstance(self.interactions, (list, tuple)) or not all(isinstance(c, str) for c in self.interactions):
            raise MethodError(f"method 'lmm': hyperparameter 'interactions' must be a list of covariate "
                              f"names or null, got {self.interactions!r}")
        unknown = [c for c in self.interactions if c not in train.covariates]
        if unknown:
            raise MethodError(f"method 'lmm': hyperparameter 'interactions' names {unknown}, which are not "
                              f"covariates of {train.name} ({list(train.covariates)})")
        return list(dict.fromkeys(self.interactions))

    def _design(self, data: TrialData, A=None) -> np.ndarray:
        A = data.treatment if A is None else np.broadcast_to(np.asarray(A, dtype=float), (data.n,))
        Xc = data.X(self.covariates_)
        Xi = data.X(self.inter_)
        return np.column_stack([np.ones(data.n), A, Xc, A[:, None] * Xi])

    def _contrast(self, data: TrialData) -> np.ndarray:
        """Rows ``c`` with ``c' beta`` the CATE: design at A = 1 minus design at A = 0."""
        return np.column_stack([np.zeros(data.n), np.ones(data.n), np.zeros((data.n, len(self.covariates_))),
                                data.X(self.inter_)])

    # ------------------------------------------------------------------ API
    def _fit(self, train: TrialData) -> None:
        train.validate()
        self.covariates_ = list(train.covariates)
        self.inter_ = self._interacting(train)
        self.names_ = (["(Intercept)", "treatment"] + self.covariates_
                       + [f"treatment:{c}" for c in self.inter_])
        X = self._design(train)
        try:
            self.result_ = fit_lmm(train.outcome, X, train.cluster, reml=bool(self.reml))
        except LMMError as e:
            raise TrialDataError(f"{train.name}: method 'lmm' cannot fit Y ~ {' + '.join(self.names_[1:])} "
                                 f"+ (1 | cluster): {e}") from None

    def predict_outcome(self, train: TrialData) -> OutcomePrediction:
        """X'beta (marginal) and X'beta + the cluster's BLUP (conditional) at the observed A."""
        marginal = self._design(train) @ self.result_.beta
        blup = self.result_.blup_for(train.cluster)[:, 0]
        return OutcomePrediction(marginal, marginal + blup)

    def _predict(self, test: TrialData) -> CateResult:
        missing = [c for c in self.covariates_ if c not in test.frame.columns]
        if missing:
            raise MethodError(f"method 'lmm': prediction table {test.name} lacks covariate column(s) {missing}")
        r = self.result_
        C = self._contrast(test)
        point = C @ r.beta
        lo, hi, se = wald(point, C, r.cov_beta)
        cbar = C.mean(axis=0, keepdims=True)
        alo, ahi, ase = wald(cbar @ r.beta, cbar, r.cov_beta)
        info = {"ate_interval": (float(alo[0]), float(ahi[0])), "ate_se": float(ase[0]), "se": se,
                "beta": dict(zip(self.names_, map(float, r.beta))),
                "tau2": float(r.G[0, 0]), "sigma2": float(r.sigma2), "llf": float(r.llf),
                "converged": bool(r.converged), "singular": bool(r.singular)}
        return CateResult(point, lo, hi, info=info)
