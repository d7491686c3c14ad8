"""GPBoost: tree boosting jointly with a grouped random intercept (spec §3.7), as an R-learner.

Estimand: ``tau(x, v) = E[Y(1) - Y(0) | X = x, V = v]`` in a cluster-randomized trial, the
random intercept set to zero.

GPBoost (Sigrist 2022) boosts trees on the gradient of the marginal likelihood of
``y = F(features) + b[cluster] + e`` while re-estimating the variance components each round
(``gpboost.train`` with ``GPModel(group_data=cluster, likelihood="gaussian")``).

**Default form** (``learner_form="r"``), a two-stage R-learner in which GPBoost is the outcome model:

1. *Outcome stage.* GPBoost on ``[X, V]`` (no treatment) with the cluster random intercept,
   cross-fitted by whole clusters (folds from :mod:`clusterhte.folds`, stratified by arm; in a
   cluster-bootstrap refit copies of a cluster stay together and the fold count adapts to the
   number of distinct clusters, so a 10-cluster trial never yields an empty or one-arm fold). The
   number of rounds is chosen by ``gpboost.cv`` on the same folds (early stopping), and each
   held-out fold is predicted by that CV's booster trained on the other folds, at the chosen
   round count, random part ignored. Nothing is fitted before the folds are made; a held-out
   cluster enters its own prediction only through the one number of rounds chosen over all folds
   (the usual tuning of a nuisance model).
2. *Random intercept and residual.* With the out-of-fold predictions ``m`` held fixed, the EM of
   :mod:`clusterhte.methods.em_trees` estimates ``s_b^2, s_e^2`` and the BLUPs, projected off the
   cluster-level span of ``[1, V, A, A x V]`` so the intercept cannot take the treatment effect or
   its linear modification by a cluster covariate (:func:`~clusterhte.methods.em_trees.r_learner`).
3. *Effect stage.* Gradient boosting (``gpboost.train`` without a random part) of the R-learner
   pseudo-outcome ``r / (a - e)`` with weights ``(a - e)^2`` on ``[X, V]``: every tree of this
   model is a treatment interaction, so the CATE can vary wherever the data say it does. With
   ``effect_linear=True`` (default) the boosting starts from the linear R-learner (weighted least
   squares of the pseudo-outcome on ``[1, X, V]``) and the trees fit its residual; inside the
   cross-validation the linear part is refitted on each training fold
   (:func:`~clusterhte.methods.em_trees.linear_start_cv`). The rounds are chosen by cluster
   cross-validation with early stopping, and the heterogeneity is shrunk toward the ATE by the
   positive-part James-Stein factor ``max(0, 1 - 1/t^2)`` of the cluster-robust t statistic of
   the out-of-fold calibration slope (``effect_shrinkage="test"``; ``"slope"`` multiplies by the
   slope too, :func:`~clusterhte.methods.em_trees.calibrated_effect`; held-out folds enter only
   through the round count).

There is no linear offset any more: the previous version fitted an LMM on ``[1, V, A]`` before the
CV folds (leakage into the choice of rounds), had no ``A x V`` term (so the CATE stayed almost
constant, SD 0.02-0.20 against a true 0.5-0.8, pointwise coverage 0.30-0.58) and no rank check
(a refit with a cluster covariate equal to ``A`` gave a treatment coefficient of -42). The only
linear parts now are the projection, the main-effect correction and the linear effect start of the
R-learner, all rank-safe (R's in-order rank test; aliased columns are dropped, with a warning).

**R original** (``learner_form="s"``): ``gpboost(data = [X, V, A], label, group_data = cluster,
likelihood = "gaussian", nrounds, learning_rate, max_depth, ...)``, an S-learner, CATE
``F(x, v, 1) - F(x, v, 0)`` with ``ignore_gp_model=True``; rounds by the same cluster CV. Its
measured weakness: the marginal-likelihood gradient damps cluster-level residuals by
``s_e^2 / (s_e^2 + n_i s_b^2)``, so the random intercept keeps the treatment effect (mean CATE 0.00
against 1.0 on the ``crt_constant`` fixture) and the trees rarely split on ``A``.

Measured before the linear start (``python -m clusterhte.evaluate.battery --methods gpboost
--reps 3 --settings quick``): null CATE SD 0.00, cluster modifier correlation 0.87, linear and
nonlinear CATE SD 0.37 / 0.25 against 0.56 / 0.43, pointwise coverage 0.80 / 0.77: the pseudo-
outcome is so noisy that early-stopped boosting stops after a few rounds, and the slope
calibration shrank what it found toward the ATE. With the linear start and the test shrinkage
(``--reps 20``): null CATE SD 0.09 with 0 inside 97 % of the intervals, cluster modifier correlation
0.95, ATE error -0.02, pointwise coverage 0.975 (linear) / 0.876 (nonlinear), no failure on 10
clusters (table in :mod:`clusterhte.methods.em_trees`).

Aliased columns of the linear parts (the random-intercept projection and the linear start) are
dropped with an :class:`~clusterhte.mixed.design.AliasedColumnsWarning` naming them and listed in
``info["dropped"]`` (as lme4); the fit does not change.

Intervals: point ± t_{B-1} quantile × SD of ``n_bootstrap`` (B) cluster-bootstrap refits
(clusters resampled within arm); every refit repeats the folds, the CV choice of both round
counts and the calibration. GPBoost itself gives no intervals for the tree part. ``0`` gives NaN.
"""

from __future__ import annotations

import numpy as np

from clusterhte.data.trial import TrialData
from clusterhte.methods.base import CateResult, Estimator, MethodError
from clusterhte.methods.em_trees import (LinearStart, RFit, bootstrap_cate_result, bootstrap_fits,
                                         calibrated_effect, check_crt, check_effect_stage, check_nonnegative_int,
                                         check_positive, crossfit_folds, features, linear_start_cv, r_learner,
                                         report_aliased, seed_streams)


def _fold_pairs(folds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in range(int(folds.max()) + 1)]


class _Booster:
    """``gpboost.train`` with a fixed number of rounds, optionally with a grouped random intercept
    (``groups`` per training row); ``predict`` ignores the random part."""

    def __init__(self, params: dict, rounds: int, groups: np.ndarray | None = None):
        self.params, self.rounds, self.groups = params, int(rounds), groups

    def fit(self, F, y, sample_weight=None, rows=None):
        import gpboost as gpb

        gp = None
        if self.groups is not None:
            g = self.groups if rows is None else self.groups[rows]
            gp = gpb.GPModel(group_data=g, likelihood="gaussian")
        self.gp_ = gp
        self.booster_ = gpb.train(self.params, gpb.Dataset(F, y, weight=sample_weight), gp_model=gp,
                                  num_boost_round=self.rounds)
        return self

    def predict(self, F):
        if self.gp_ is None:
            return np.asarray(self.booster_.predict(F), float).ravel()
        return np.asarray(self.booster_.predict(data=F, ignore_gp_model=True), float).ravel()


class _SFit:
    """The R original's S-learner fit."""

    def __init__(self, booster: _Booster, rounds: int):
        self.booster, self.rounds = booster, rounds

    def cate(self, F1, F0):
        return self.booster.predict(F1) - self.booster.predict(F0)


class GPBoost(Estimator):
    """GPBoost with a cluster random intercept, as an R-learner (paper label "GPBoost").

    See the module docstring for the estimand, the algorithm and the differences from the R
    original.

    Hyperparameters
    ---------------
    learning_rate, max_depth, min_samples_leaf : tree boosting (``num_leaves = 2**max_depth``).
    max_rounds : upper bound on boosting rounds of each stage.
    cv_folds : cluster folds for cross-fitting and for the CV choice of rounds (capped by the
        number of clusters per arm, at least 2).
    early_stopping_rounds : CV stops after this many rounds without improvement.
    learner_form : ``"r"`` (default, module docstring) or ``"s"`` (the R original's S-learner).
    effect_linear : start the effect boosting from the linear R-learner (default true).
    effect_shrinkage : ``"test"`` (default) or ``"slope"``, see the module docstring.
    effect_interval : ``"hull"`` (default): the hull of the intervals of the shrunk and the unshrunk
        estimate (:func:`~clusterhte.methods.em_trees.hull_interval`); ``"shrunk"``: the shrunk
        estimate's interval alone.
    n_bootstrap : cluster-bootstrap replicates for the intervals (0 = no intervals).
    n_threads : the full-data fit and the bootstrap refits run ``n_threads`` at a time on a thread
        pool, one gpboost thread each (same estimates for every thread count; gpboost's own
        OpenMP threads slow 600-row fits down, as LightGBM's do in MEGB).
    """

    name = "gpboost"
    label = "GPBoost"
    designs = ("crt",)
    has_intervals = True
    library = "gpboost"

    def __init__(self, learning_rate: float = 0.05, max_depth: int = 3, min_samples_leaf: int = 5,
                 max_rounds: int = 1000, cv_folds: int = 5, early_stopping_rounds: int = 20,
                 learner_form: str = "r", effect_linear: bool = True, effect_shrinkage: str = "test",
                 effect_interval: str = "hull", n_bootstrap: int = 50, n_threads: int = 1,
                 random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    def _check(self, train: TrialData) -> None:
        check_positive(self, learning_rate=self.learning_rate, max_depth=self.max_depth,
                       min_samples_leaf=self.min_samples_leaf, max_rounds=self.max_rounds,
                       early_stopping_rounds=self.early_stopping_rounds, n_threads=self.n_threads)
        check_nonnegative_int(self, cv_folds=self.cv_folds, n_bootstrap=self.n_bootstrap,
                              max_rounds=self.max_rounds, max_depth=self.max_depth,
                              early_stopping_rounds=self.early_stopping_rounds)
        if not np.isfinite(self.learning_rate):
            raise MethodError(f"method 'gpboost': hyperparameter 'learning_rate' must be finite, got {self.learning_rate!r}")
        if self.cv_folds < 2:
            raise MethodError(f"method 'gpboost': hyperparameter 'cv_folds' must be an integer >= 2 (it is "
                              f"capped by the number of clusters per arm), got {self.cv_folds!r}")
        check_effect_stage(self)
        if self.learner_form not in ("r", "s"):
            raise MethodError(f"method 'gpboost': hyperparameter 'learner_form' must be 'r' (R-learner) or "
                              f"'s' (the R original's S-learner), got {self.learner_form!r}")

    def _params(self, seed: int) -> dict:
        d = int(self.max_depth)
        return {"objective": "regression_l2", "learning_rate": float(self.learning_rate),
                "max_depth": d, "num_leaves": 2 ** d, "min_data_in_leaf": int(self.min_samples_leaf),
                "num_threads": 1, "deterministic": True, "seed": int(seed % (2 ** 31 - 1)),
                "verbose": -1}

    def _cv_rounds(self, F, y, folds, seed, groups=None, weight=None, oof: bool = False):
        """Rounds chosen by cross-validation over the cluster folds (early stopping); with
        ``oof=True`` also the out-of-fold predictions of the CV's boosters at that round count
        (each fold predicted by the booster trained on the other folds, random part ignored)."""
        import gpboost as gpb

        gp = gpb.GPModel(group_data=groups, likelihood="gaussian") if groups is not None else None
        cv = gpb.cv(self._params(seed), gpb.Dataset(F, y, weight=weight), gp_model=gp,
                    num_boost_round=int(self.max_rounds), early_stopping_rounds=int(self.early_stopping_rounds),
                    folds=_fold_pairs(folds), use_gp_model_for_validation=groups is not None,
                    verbose_eval=False, seed=int(seed % (2 ** 31 - 1)), return_cvbooster=oof)
        boosters = cv.pop("cvbooster", None)
        rounds = len(next(iter(cv.values()))) if cv else 0
        if rounds < 1:
            raise MethodError("method 'gpboost': cross-validation of the number of rounds failed")
        if not oof:
            return rounds
        pred = np.empty(len(y))
        for k, (_, te) in enumerate(_fold_pairs(folds)):
            pred[te] = np.asarray(boosters.boosters[k].predict(data=F[te], ignore_gp_model=True,
                                                                num_iteration=rounds), float).ravel()
        return rounds, pred

    def _fit_effect(self, G, z, w, folds, seed, codes, z_test):
        import gpboost as gpb

        ds, pairs, fpreproc, lins = linear_start_cv(gpb, G, z, w, folds, self.effect_linear, {"verbose": -1})
        cv = gpb.cv(self._params(seed), ds, num_boost_round=int(self.max_rounds),
                    early_stopping_rounds=int(self.early_stopping_rounds), folds=pairs, fpreproc=fpreproc,
                    verbose_eval=False, seed=int(seed % (2 ** 31 - 1)), return_cvbooster=True)
        boosters = cv.pop("cvbooster").boosters
        rounds = len(next(iter(cv.values()))) if cv else 0
        if rounds < 1:
            raise MethodError("method 'gpboost': cross-validation of the number of rounds failed")
        oof = np.empty(len(z))
        for (te, lin), bst in zip(lins, boosters):
            oof[te] = lin.predict(G[te]) + np.asarray(bst.predict(data=G[te], num_iteration=rounds), float).ravel()
        booster = LinearStart(_Booster(self._params(seed), rounds), self.effect_linear).fit(G, z, sample_weight=w)
        cal = calibrated_effect(booster, booster.predict(G), oof, z_test, w, codes, self.effect_shrinkage)
        return cal, {"effect_rounds": rounds, "effect_slope": cal.slope, "effect_t": cal.t}

    def _fit_one(self, train: TrialData, seed: int):
        codes = train.cluster_codes
        folds = crossfit_folds(train, int(self.cv_folds), np.random.default_rng(seed))
        if self.learner_form == "s":
            F = features(train)
            rounds = self._cv_rounds(F, train.outcome, folds, seed, groups=codes)
            return _SFit(_Booster(self._params(seed), rounds, codes).fit(F, train.outcome), rounds)
        G, y = train.X(), train.outcome
        rounds, m = self._cv_rounds(G, y, folds, seed, groups=codes, oof=True)
        fit = r_learner(G, y, train.treatment, codes, folds, m, self._fit_effect, seed, names=train.covariates)
        fit.info["outcome_rounds"] = rounds
        return fit

    def _fit(self, train: TrialData) -> None:
        check_crt(self, train)
        self._check(train)
        seed, rng, seeds = seed_streams(self.random_state)
        self.covariates_ = train.covariates
        # the full-data fit and the refits share one pool of n_threads workers
        self.fit_, self.boot_ = bootstrap_fits(self._fit_one, train, int(self.n_bootstrap), rng, seeds,
                                               n_threads=int(self.n_threads),
                                               full=lambda: self._fit_one(train, seed))
        self.dropped_ = self.fit_.info["dropped"] if isinstance(self.fit_, RFit) else {}
        report_aliased(self, train, self.dropped_)

    def _cate(self, fit, test: TrialData) -> np.ndarray:
        if isinstance(fit, RFit):
            return fit.cate(test.X(self.covariates_))
        return fit.cate(features(test, 1.0, self.covariates_), features(test, 0.0, self.covariates_))

    def _predict(self, test: TrialData) -> CateResult:
        missing = [c for c in self.covariates_ if c not in test.frame.columns]
        if missing:
            raise MethodError(f"method 'gpboost': prediction table lacks covariate(s) {missing}")
        if isinstance(self.fit_, RFit):
            em = self.fit_.em
            info = {"sigma2_b": em.sigma2_b, "sigma2_e": em.sigma2_e, **self.fit_.info}
        else:
            cp = np.asarray(self.fit_.booster.gp_.get_cov_pars(), float).ravel()
            info = {"rounds": self.fit_.rounds, "sigma2_e": float(cp[0]), "sigma2_b": float(cp[1])}
        info["learner_form"] = self.learner_form
        info["dropped"] = self.dropped_
        return bootstrap_cate_result(lambda f: self._cate(f, test), self.fit_, self.boot_, self.effect_interval,
                                     info=info)
