"""MERF and MEGB: one EM algorithm for a random-intercept model with a tree learner inside.

Model (spec §2, §3.6): ``y_ij = f(X_ij, V_i, A_i) + b_i + e_ij``, ``b_i ~ N(0, s_b^2)``,
``e_ij ~ N(0, s_e^2)``; ``f`` is a random forest (MERF) or gradient boosting (MEGB) fitted as an
S-learner on the features ``[X, V, A]``. The CATE is the population-level contrast
``tau(x, v) = f(x, v, 1) - f(x, v, 0)`` (random intercept set to zero).

EM (Hajjem, Bellavance & Larocque 2014; spec §3.6 steps 1-6), random intercept (``Z = 1``),
vectorised over clusters with ``numpy.bincount``. With ``d_i = s_e^2 + n_i s_b^2``:

1. ``y* = y - b[cluster]``;
2. fit the learner on ``(F, y*)``; ``f = learner(F)``;
3. ``b_i = n_i s_b^2 / d_i * mean_i(y - f)`` (the BLUP; ``Z_i' V_i^{-1}`` in closed form);
   ``eps = y - f - b[cluster]``;
4. ``s_e^2 <- (eps'eps + s_e^2 * sum_i n_i s_b^2 / d_i) / N``
   (= ``sum_i [eps_i'eps_i + s_e^2 (n_i - s_e^2 tr V_i^{-1})] / N``);
5. ``s_b^2 <- mean_i(b_i^2 + s_b^2 s_e^2 / d_i)`` (= ``mean_i[b_i^2 + D - D Z_i'V_i^{-1}Z_i D]``);
6. stop when the relative change of the generalized log-likelihood
   ``GLL = sum_i [eps_i'eps_i / s_e^2 + b_i^2 / s_b^2 + log s_b^2 + n_i log s_e^2]`` is below ``tol``,
   or after ``max_iter`` iterations.

With a linear-regression learner the fixed point of these updates is the maximum-likelihood
random-intercept fit (Laird, Lange & Stram 1987); ``tests/test_em_trees.py`` checks it against
statsmodels ``MixedLM(reml=False)``.

**Absorption correction** (spec §3.9, §6.1). Treatment ``A`` and the cluster covariates ``V`` are
constant within cluster, so the random intercept can absorb their effects (the learner then sees
a target ``y*`` with the treatment effect removed and the CATE shrinks toward 0). With
``project_cluster_constant=True`` the BLUPs are replaced by ``b~ = (I - P) b`` where ``P`` is the
cluster-level projection on ``[1, every column of F that is constant within every cluster]`` (this
always includes ``A`` and ``V``), as mermboost does. ``b~`` is used in step 1, in the residual
``eps`` and in the updates 4-6. The shrinkage factor in step 3 is the usual one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import pandas as pd

from clusterhte.data.trial import TrialData
from clusterhte.methods.base import CateResult, Estimator, MethodError
from clusterhte.methods.bootstrap import bootstrap_result, resample_clusters

_FLOOR = 1e-10


# ------------------------------------------------------------------------------------------ helpers
def cluster_constant_mask(F: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Boolean mask of the columns of ``F`` that are constant within every cluster."""
    J = codes.max() + 1
    lo = np.full((J, F.shape[1]), np.inf)
    hi = np.full((J, F.shape[1]), -np.inf)
    np.minimum.at(lo, codes, F)
    np.maximum.at(hi, codes, F)
    return np.all(lo == hi, axis=0)


def cluster_projector(F: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Orthonormal basis Q (J x r) of the cluster-level span of ``[1, cluster-constant columns]``.

    ``b - Q @ (Q.T @ b)`` is ``(I - P) b`` of mermboost. Rank deficiency is handled by the SVD.
    """
    J = codes.max() + 1
    first = np.full(J, -1)
    first[codes[::-1]] = np.arange(len(codes))[::-1]  # first row of each cluster
    cc = F[first][:, cluster_constant_mask(F, codes)]
    Xcc = np.column_stack([np.ones(J), cc])
    U, s, _ = np.linalg.svd(Xcc, full_matrices=False)
    rank = int(np.sum(s > s[0] * max(Xcc.shape) * np.finfo(float).eps))
    return U[:, :rank]


@dataclass
class EMFit:
    """Result of :func:`em_random_intercept`."""

    learner: object
    b: np.ndarray            # random intercepts used (projected when requested), one per cluster
    sigma2_b: float
    sigma2_e: float
    gll: list = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False


def em_random_intercept(F: np.ndarray, y: np.ndarray, codes: np.ndarray,
                        make_learner: Callable[[int], object], max_iter: int = 20, tol: float = 1e-3,
                        project: np.ndarray | None = None, sigma2_b: float = 1.0,
                        sigma2_e: float = 1.0) -> EMFit:
    """EM for ``y = f(F) + b[codes] + e`` with a random intercept; see the module docstring.

    ``make_learner(iteration)`` returns a fresh, unfitted regressor (``fit``/``predict``). The
    estimators pass the same learner seed in every iteration, so the EM map is deterministic and
    the GLL can settle.
    ``project`` is an orthonormal basis Q (J x r) from :func:`cluster_projector` or None.
    ``tol`` is the relative GLL change that stops the loop; ``tol <= 0`` runs ``max_iter`` iterations.
    """
    y = np.asarray(y, dtype=float)
    J = codes.max() + 1
    N = y.shape[0]
    n_i = np.bincount(codes, minlength=J).astype(float)
    b = np.zeros(J)
    s2b, s2e = float(sigma2_b), float(sigma2_e)
    out = EMFit(learner=None, b=b, sigma2_b=s2b, sigma2_e=s2e)
    for it in range(max_iter):
        learner = make_learner(it)
        learner.fit(F, y - b[codes])
        r = y - learner.predict(F)
        d = s2e + n_i * s2b
        b = n_i * s2b / d * (np.bincount(codes, weights=r, minlength=J) / n_i)
        if project is not None:
            b = b - project @ (project.T @ b)
        eps = r - b[codes]
        s2e_new = (eps @ eps + s2e * np.sum(n_i * s2b / d)) / N
        s2b_new = np.mean(b ** 2 + s2b * s2e / d)
        s2e, s2b = max(s2e_new, _FLOOR), max(s2b_new, _FLOOR)
        gll = float(eps @ eps / s2e + np.sum(b ** 2) / s2b + J * np.log(s2b) + N * np.log(s2e))
        out.gll.append(gll)
        out.learner, out.b, out.sigma2_b, out.sigma2_e, out.n_iter = learner, b, s2b, s2e, it + 1
        if it > 0 and tol > 0 and abs(gll - out.gll[-2]) <= tol * abs(out.gll[-2]):
            out.converged = True
            break
    return out


def features(data: TrialData, treatment: float | np.ndarray | None = None,
             columns: tuple[str, ...] | None = None) -> np.ndarray:
    """The S-learner feature matrix ``[X, V, A]`` (A replaced by ``treatment`` when given).

    ``columns``: the covariates in training order (default: the table's own covariates).
    """
    a = data.treatment if treatment is None else np.broadcast_to(np.asarray(treatment, float), (data.n,))
    return np.column_stack([data.X(columns), a])


def check_crt(est: Estimator, train: TrialData) -> None:
    """Refuse non-CRT data with a message naming the method (the base class also checks)."""
    if train.design != "crt":
        raise MethodError(f"method '{est.name}' is for cluster-randomized trials (design 'crt'); "
                          f"{train.name} has design '{train.design}'")


def check_positive(est: Estimator, **values) -> None:
    for k, v in values.items():
        if v is None or v <= 0:
            raise MethodError(f"method '{est.name}': hyperparameter '{k}' must be > 0, got {v!r}")


def check_nonnegative_int(est: Estimator, **values) -> None:
    for k, v in values.items():
        if isinstance(v, bool) or not float(v).is_integer() or v < 0:
            raise MethodError(f"method '{est.name}': hyperparameter '{k}' must be an integer >= 0, got {v!r}")


def seed_streams(random_state: int | None) -> tuple[int, np.random.Generator, np.random.Generator]:
    """(learner seed of the main fit, generator for cluster resampling, generator for refit seeds)."""
    ss = np.random.SeedSequence(random_state)
    main, boot, seeds = ss.spawn(3)
    return (int(main.generate_state(1)[0] & 0x7FFFFFFF), np.random.default_rng(boot),
            np.random.default_rng(seeds))


ORIGIN = "_cluster_of_origin"


def bootstrap_fits(fit_one: Callable[[TrialData, int], object], train: TrialData, B: int,
                   rng: np.random.Generator, seeds: np.random.Generator) -> list:
    """B refits of ``fit_one(sample, seed)`` on cluster-bootstrap samples (clusters within arm).

    A cluster drawn twice enters as two clusters; the column ``_cluster_of_origin`` keeps the
    original cluster so that cross-validation folds can keep the copies together
    (:func:`fold_groups`).
    """
    tagged = replace(train, frame=train.frame.assign(**{ORIGIN: train.cluster_codes}))
    return [fit_one(resample_clusters(tagged, rng), int(seeds.integers(2 ** 31 - 1))) for _ in range(B)]


def fold_groups(data: TrialData) -> np.ndarray:
    """Integer groups for cross-validation folds: the original cluster (copies of a cluster in a
    bootstrap sample share a group, so no cluster is both fitted and held out)."""
    if ORIGIN in data.frame.columns:
        return pd.factorize(data.frame[ORIGIN], sort=True)[0]
    return data.cluster_codes


def result_with_bootstrap(point: np.ndarray, draws: list[np.ndarray], level: float = 0.95,
                          info: dict | None = None) -> CateResult:
    """CateResult with the full-data point and normal cluster-bootstrap intervals
    (:func:`clusterhte.methods.bootstrap.bootstrap_result`)."""
    return bootstrap_result(point, np.column_stack(draws) if draws else None, level, info)


# ------------------------------------------------------------------------------------ estimators
class ArmwiseLearner:
    """T-learner inside the EM: one regressor per arm on ``[X, V]`` (``A`` is the last column).

    ``predict`` uses each row's own ``A``; the CATE ``f(x, v, 1) - f(x, v, 0)`` is then
    ``f_1(x, v) - f_0(x, v)``. Unlike an S-learner, a forest cannot shrink the treatment effect by
    rarely splitting on ``A``.
    """

    def __init__(self, make: Callable[[int], object], seed: int):
        self.make, self.seed = make, int(seed)

    def fit(self, F, y):
        a = F[:, -1] > 0.5
        self.models_ = []
        for k, rows in enumerate((~a, a)):
            if not rows.any():
                raise ValueError("both arms are needed to fit the arm-wise learner")
            m = self.make(self.seed + k)
            m.fit(F[rows, :-1], y[rows])
            self.models_.append(m)
        return self

    def predict(self, F):
        a = F[:, -1] > 0.5
        out = np.empty(F.shape[0])
        for k, rows in enumerate((~a, a)):
            if rows.any():
                out[rows] = self.models_[k].predict(F[rows, :-1])
        return out


class _EMTrees(Estimator):
    """Shared fit/predict of MERF and MEGB; subclasses provide ``_learner(seed)``."""

    designs = ("crt",)
    has_intervals = True

    def _learner(self, seed: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self) -> None:
        check_nonnegative_int(self, max_iter=self.max_iter, n_bootstrap=self.n_bootstrap)
        if self.max_iter < 1:
            raise MethodError(f"method '{self.name}': hyperparameter 'max_iter' must be >= 1, got {self.max_iter!r}")
        if self.tol is None or self.tol < 0:
            raise MethodError(f"method '{self.name}': hyperparameter 'tol' must be >= 0, got {self.tol!r}")
        if self.learner_form not in ("s", "t"):
            raise MethodError(f"method '{self.name}': hyperparameter 'learner_form' must be 's' (one learner "
                              f"on [X, V, A]) or 't' (one learner per arm), got {self.learner_form!r}")

    def _fit_one(self, train: TrialData, seed: int) -> EMFit:
        F = features(train)
        codes = train.cluster_codes
        Q = cluster_projector(F, codes) if self.project_cluster_constant else None
        s2 = float(np.var(train.outcome))
        # start s_b^2 = s_e^2 = var(y)/2 (the R codes start at s_e^2 = 1, D = I; scale-free here)
        if self.learner_form == "t":
            def make(it):
                return ArmwiseLearner(self._learner, seed)
        else:
            def make(it):
                return self._learner(seed)
        return em_random_intercept(F, train.outcome, codes, make,
                                   max_iter=int(self.max_iter), tol=float(self.tol), project=Q,
                                   sigma2_b=s2 / 2, sigma2_e=s2 / 2)

    def _fit(self, train: TrialData) -> None:
        check_crt(self, train)
        self._check()
        seed, rng, seeds = seed_streams(self.random_state)
        self.covariates_ = train.covariates
        self.em_ = self._fit_one(train, seed)
        self.boot_ = bootstrap_fits(lambda d, s: self._fit_one(d, s).learner, train,
                                    int(self.n_bootstrap), rng, seeds)

    def _cate(self, learner, test: TrialData) -> np.ndarray:
        return (learner.predict(features(test, 1.0, self.covariates_))
                - learner.predict(features(test, 0.0, self.covariates_)))

    def _predict(self, test: TrialData) -> CateResult:
        missing = [c for c in self.covariates_ if c not in test.frame.columns]
        if missing:
            raise MethodError(f"method '{self.name}': prediction table lacks covariate(s) {missing}")
        point = self._cate(self.em_.learner, test)
        info = {"sigma2_b": self.em_.sigma2_b, "sigma2_e": self.em_.sigma2_e,
                "em_iterations": self.em_.n_iter, "em_converged": self.em_.converged}
        return result_with_bootstrap(point, [self._cate(m, test) for m in self.boot_], info=info)


class MERF(_EMTrees):
    """MERF: mixed-effects random forest S-learner (paper label "MERF").

    Estimand: ``tau(x, v) = E[Y(1) - Y(0) | X = x, V = v]`` in a CRT, random intercept set to 0.

    R original: ``LongituRF::MERF`` (Capitaine et al. 2021; Hajjem et al. 2014) with a random
    intercept (``Z = 1``), ``ntree`` trees; also the Python ``merf`` package (spec §3.6).

    Learner: scikit-learn ``RandomForestRegressor(n_estimators, min_samples_leaf, max_features)``
    on ``[X, V, A]``. Differences from the R original:

    * ``project_cluster_constant=True`` (default) removes from the random intercepts their
      projection on the cluster-constant columns (mermboost's correction; module docstring);
      ``False`` is the original MERF, whose CATE is shrunk toward 0 in a CRT.
    * ``learner_form="t"`` (default) fits one forest per arm on ``[X, V]`` (spec section 3.8 allows
      a T-learner). The S-learner of the R original (``"s"``: one forest on ``[X, V, A]``) shrinks
      the effect even with the correction, because a forest splits on a binary ``A`` in few
      trees: on the ``crt_constant`` test trial (true effect 1.0, LMM estimate 1.00) its mean
      CATE was 0.38 against 1.0 for the T-learner.
    * The EM starts at ``s_b^2 = s_e^2 = var(y)/2`` instead of ``1``; ``tol`` is LongituRF's
      ``delta``; ``max_features=1.0`` (bagging) whereas ``randomForest`` uses ``mtry = p/3``.
    * Intervals: normal intervals (point ± 1.96 SD) of ``n_bootstrap`` cluster-bootstrap refits (clusters
      resampled within arm, :mod:`clusterhte.methods.bootstrap`); ``0`` gives NaN intervals.
    """

    name = "merf"
    label = "MERF"
    library = "scikit-learn"

    def __init__(self, n_estimators: int = 300, min_samples_leaf: int = 5, max_features: float = 1.0,
                 max_iter: int = 20, tol: float = 1e-3, project_cluster_constant: bool = True,
                 learner_form: str = "t", n_bootstrap: int = 50, n_threads: int = 1,
                 random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    def _check(self) -> None:
        super()._check()
        check_positive(self, n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
                       max_features=self.max_features, n_threads=self.n_threads)

    def _learner(self, seed: int):
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=int(self.n_estimators),
                                     min_samples_leaf=int(self.min_samples_leaf),
                                     max_features=self.max_features, n_jobs=int(self.n_threads),
                                     random_state=seed % (2 ** 31 - 1))


class _LGBMRegressor:
    """Minimal fit/predict wrapper around ``lightgbm.train`` (deterministic, single-threaded)."""

    def __init__(self, params: dict, num_boost_round: int):
        self.params, self.num_boost_round = params, num_boost_round

    def fit(self, F, y):
        import lightgbm as lgb

        self.booster_ = lgb.train(self.params, lgb.Dataset(F, y, params={"verbose": -1}),
                                  num_boost_round=self.num_boost_round)
        return self

    def predict(self, F):
        return self.booster_.predict(F, num_threads=self.params["num_threads"])


class MEGB(_EMTrees):
    """MEGB: mixed-effects gradient boosting S-learner (paper label "MEGB").

    Estimand: ``tau(x, v) = E[Y(1) - Y(0) | X = x, V = v]`` in a CRT, random intercept set to 0.

    R original: CRAN ``MEGB`` (Olaniran & Olaniran): MERF's EM with ``gbm`` inside,
    ``MEGB(X, Y, id, Z, iter = 100, ntree = 500, shrinkage = 0.05, interaction.depth = 1,
    n.minobsinnode = 5, delta = 0.001)``.

    Learner: LightGBM (``lightgbm.train``, L2 loss, ``n_estimators`` rounds, ``learning_rate``,
    ``max_depth`` with ``num_leaves = 2**max_depth``, ``min_data_in_leaf = min_samples_leaf``,
    row subsampling ``subsample`` per round). Differences from the R original:

    * ``max_depth = 3`` instead of ``interaction.depth = 1``: with stumps an S-learner is additive
      in A and the CATE is forced constant (spec §3.8, §6.4).
    * ``subsample = 0.5`` follows gbm's default ``bag.fraction``; LightGBM grows trees on
      histogram bins (255) rather than exact splits.
    * ``project_cluster_constant=True`` (default): mermboost's correction of the random intercepts
      (module docstring); ``False`` is the original EM.
    * The EM starts at ``s_b^2 = s_e^2 = var(y)/2``.
    * Intervals: normal intervals (point ± 1.96 SD) of ``n_bootstrap`` cluster-bootstrap refits; ``0`` gives NaN.
    """

    name = "megb"
    label = "MEGB"
    library = "lightgbm"

    def __init__(self, n_estimators: int = 500, learning_rate: float = 0.05, max_depth: int = 3,
                 min_samples_leaf: int = 5, subsample: float = 0.5, max_iter: int = 100,
                 tol: float = 1e-3, project_cluster_constant: bool = True, learner_form: str = "t",
                 n_bootstrap: int = 50, n_threads: int = 1, random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    def _check(self) -> None:
        super()._check()
        check_positive(self, n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                       min_samples_leaf=self.min_samples_leaf, subsample=self.subsample,
                       n_threads=self.n_threads)
        if isinstance(self.max_depth, bool) or not float(self.max_depth).is_integer() or self.max_depth < 2:
            raise MethodError(
                f"method '{self.name}': hyperparameter 'max_depth' must be an integer >= 2 (depth 1 "
                f"makes the S-learner additive in the treatment, so the CATE is constant); got {self.max_depth!r}")
        if self.subsample > 1:
            raise MethodError(f"method '{self.name}': hyperparameter 'subsample' must be in (0, 1], got {self.subsample!r}")

    def _learner(self, seed: int):
        params = {"objective": "regression", "learning_rate": float(self.learning_rate),
                  "max_depth": int(self.max_depth), "num_leaves": 2 ** int(self.max_depth),
                  "min_data_in_leaf": int(self.min_samples_leaf), "min_sum_hessian_in_leaf": 0.0,
                  "bagging_fraction": float(self.subsample), "bagging_freq": 1 if self.subsample < 1 else 0,
                  "num_threads": int(self.n_threads), "deterministic": True, "force_row_wise": True,
                  "seed": int(seed % (2 ** 31 - 1)), "verbose": -1}
        return _LGBMRegressor(params, int(self.n_estimators))
