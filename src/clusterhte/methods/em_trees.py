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

**Absorption.** Treatment ``A`` and the cluster covariates ``V`` are constant within cluster, so
a random intercept can absorb their effects. With ``project_cluster_constant=True`` the BLUPs are
replaced by ``b~ = (I - P) b`` where ``P`` is the cluster-level projection on
``[1, C, A, A x C]`` (``C`` = every feature constant within every cluster, so ``V``;
:func:`cluster_projector`), as mermboost does, now including the ``A x V`` columns.

**The default form, ``learner_form="r"``** (:func:`r_learner`): an R-learner on top of the EM.

1. Outcome stage: the EM above for ``y = m(X, V) + b_i + e`` with the learner (forest / boosting)
   on ``[X, V]`` *without* the treatment, cross-fitted by whole clusters
   (:class:`CrossFitted`, folds from :mod:`clusterhte.folds` via :func:`crossfit_folds`), and the
   BLUPs projected off ``[1, C, A, A x C]``. ``outcome_passes`` learner passes (each refits the
   learner on ``y - b~``); the variance components are iterated to convergence with the learner's
   predictions held fixed.
2. Effect stage: Nie & Wager's R-loss with the propensity known by design. With
   ``r = y - m - b~`` (minus a rank-safe linear correction of the covariates' main effects,
   :func:`linear_main_effects`) and ``e`` the treated share, the effect model is a regression of
   ``r / (a - e)`` on ``[X, V]`` with weights ``(a - e)^2``. With ``effect_linear=True`` (default)
   it starts from the *linear R-learner* ``l(x)`` (weighted least squares of the pseudo-outcome on
   ``[1, X, V]``, :func:`weighted_linear_fit`) and the trees model only its residual
   (:class:`LinearStart`): a forest with ``effect_min_samples_leaf`` (MERF) or boosting with
   cluster-CV early stopping (MEGB; the linear part is refitted inside each CV training fold,
   :func:`linear_start_cv`, so neither the round count nor the out-of-fold predictions see the
   held-out clusters through it).
3. Shrinkage: the effect model ``g`` is shrunk toward the ATE ``c`` as ``c + s (g - g_bar)``
   (:func:`calibrated_effect`). ``t`` is the cluster-robust t statistic of the calibration slope of
   the out-of-fold predictions (Chernozhukov et al.'s best linear predictor test of heterogeneity).
   ``effect_shrinkage="test"`` (default): ``s = max(0, 1 - 1/t^2)`` (positive-part James-Stein on
   the test, 0 when the slope is negative), so under no heterogeneity (``t ~ N(0, 1)``) the CATEs
   collapse to the ATE in most trials, while a heterogeneity the held-out clusters confirm is kept
   at full scale. ``"slope"`` (the previous default): ``s = beta (1 - 1/t^2)``, the slope itself
   James-Stein-shrunk, which minimises the prediction error but biases every CATE toward the ATE
   by the factor ``beta`` (0.6-0.9 on the battery), so intervals centred on it under-cover.

Why: the two forms of the R originals fail the CRT battery
(``python -m clusterhte.evaluate.battery --methods merf,megb``, 3 replicates, quick settings):
the per-arm form (``"t"``) invents heterogeneity (null effect: CATE SD 0.42 for MERF and MEGB,
truth 0; the per-arm boosters also soak up the cluster intercepts through cluster covariates,
estimated ``s_b^2`` 0.002 against 0.11), and the single model (``"s"``, the R original)
lets the random intercept swallow a cluster-level effect (a ``tau = 0.5 + 0.8 V1`` trial gave a
CATE SD of 0.08 against 0.84) and shrinks the effect because a forest rarely splits on a binary
``A``. In the R-learner the treatment never enters the outcome learner, the held-out clusters'
outcome predictions cannot see their own treatment or intercept, and every tree of the effect
model is a treatment interaction.

Why the linear start and the test shrinkage: with the slope shrinkage and trees alone, the
effect models were shrunk toward the ATE (CATE SD 0.30-0.41 against a true 0.43-0.56) and the
bootstrap intervals, centred at the shrunk estimate, under-covered (quick settings, 3 replicates:
MEGB linear / nonlinear 0.91 / 0.87, GPBoost 0.85 / 0.83). The pseudo-outcome is so noisy (SD about
1.5 against a CATE SD of 0.5) that early-stopped boosting stops after 1-30 rounds; a linear start
gets the linear part of the CATE unbiased from the first round, and the test shrinkage no longer
scales it down. Measured with both (``python -m clusterhte.evaluate.battery --methods gpboost,megb
--scenarios null,cluster,linear,nonlinear,small --reps 20 --settings quick``; GPBoost / MEGB): null
CATE SD 0.09 / 0.09, 0 inside 97 / 97 % of the intervals; cluster modifier correlation 0.95 / 0.94,
ATE error -0.02 / 0.03; pointwise coverage linear 0.975 / 0.970, nonlinear 0.876 / 0.916 (CATE SD
0.37 / 0.40 against a true 0.43: the nonlinear remainder is still partly missed); no failure on
10 clusters of sizes 3-80. MERF (same seeds, 20 replicates): null CATE SD 0.05, 0 inside 99.7 % of
the intervals; cluster modifier correlation 0.86, ATE error 0.005; linear / nonlinear coverage
0.977 / 0.955; no failure on 10 clusters.

Aliased columns: the linear parts (the projection's ``[1, A, V, A x V]``, the main-effect
correction's and the linear start's ``[1, X, V]``) drop aliased columns by R's in-order rank test
(:func:`clusterhte.mixed.design.independent_columns`) and the full-data fit warns
(:class:`~clusterhte.mixed.design.AliasedColumnsWarning`) naming them, as lme4 does; they are
listed in ``info["dropped"]``. The dropped columns add nothing to the span, so no fit changes;
bootstrap refits (where a resample can alias a column by chance) drop them silently.

Intervals: point ± t_{B-1} quantile × SD of ``n_bootstrap`` (B) cluster-bootstrap refits
(clusters resampled within arm); each refit repeats every data-driven step (folds, the EM, the
linear start, the MEGB round count, the shrinkage factor), so the variability of the shrinkage is
in the interval. The t quantile accounts for the SD being estimated from B refits (with B = 10,
2.26 instead of 1.96). ``effect_interval="hull"`` (default) reports the hull of this interval and
the same interval of the *unshrunk* estimate (slope 1 in the full-data fit and in every refit;
:func:`hull_interval`), with the shrunk point. Why: the test shrinkage is a pretest estimator.
When the test cannot detect a heterogeneity that exists, the full fit and the refits all
collapse to the ATE, and the interval has the ATE's width around it. Measured over 20 replicates
(``python -m clusterhte.evaluate.battery --methods megb,gpboost --reps 20 --settings quick``, with
``--set megb.effect_interval=shrunk --set gpboost.effect_interval=shrunk`` for the old interval;
MEGB / GPBoost, shrunk -> hull): pointwise coverage on ``cluster20`` (a cluster-level modifier in
20 clusters of sizes 1-40) 0.907 -> 0.950 / 0.890 -> 0.928; nonlinear 0.916 -> 0.930 /
0.876 -> 0.899; small 0.917 -> 0.949 / 0.905 -> 0.936; linear 0.970 -> 0.973 / 0.975 -> 0.978;
under the null, 0 inside 0.966 -> 0.971 / 0.972 -> 0.984 of the intervals. MERF (``--methods merf
--scenarios linear,nonlinear,cluster20``): cluster20 0.891 -> 0.947, nonlinear 0.955 -> 0.966,
linear 0.977 -> 0.981. Point estimates are unchanged. ``"shrunk"`` is the interval of the shrunk
estimate alone. Either is a variance interval: a bias of the point estimate (the part of a
nonlinear CATE the early-stopped trees miss) is not in it.
MERF's refits grow ``bootstrap_trees`` trees per forest (default 100 against 300 in the full-data
fit; a third of the cost). Their extra Monte Carlo noise is removed as in the causal forest's
half-sample refits: each refit's effect forest is split into two halves, ``(tau_s1 - tau_s2)^2 / 4``
estimates its Monte Carlo variance, which is subtracted from the between-refit variance (grf's
objective-Bayes correction keeps it positive) and added back at the full-data forest's size
(:func:`~clusterhte.methods.bootstrap.monte_carlo_corrected_result`). The Monte Carlo noise of the
refits' outcome forests is not removed (it is small after the effect forest's averaging, and leaves
the interval conservative). Measured: with 120-tree forests, refits of 120 and of 40 trees gave
mean widths 1.522 / 1.517 and 1.561 / 1.576 on two battery trials (``pytest -m slow -k
refit_size tests/test_em_trees.py``). At the paper settings one replicate of
``benchmarks/crt_replicate.py --settings paper --methods merf`` took 326 CPU-s with 300-tree refits
and 112 CPU-s with 100-tree refits (with sklearn's forest class). :class:`RandomForest` grows the
same trees bit for bit without sklearn's per-tree Python overhead: 98 against 39 CPU-s for one
paper-setting replicate (fit and predict, before/after on the same machine); what remains is the
tree building itself (some 58,000 trees of 500 rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import pandas as pd

from clusterhte.data.trial import TrialData
from clusterhte.methods.base import CateResult, Estimator, MethodError
from clusterhte.methods.bootstrap import (bootstrap_result, n_workers, ordered_draws, parallel_map,
                                         resample_clusters)

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


def cluster_design(F: np.ndarray, codes: np.ndarray, treatment: np.ndarray | None = None,
                   names=None) -> tuple[np.ndarray, list[str]]:
    """Orthonormal basis Q (J x r) of the cluster-level span of ``[1, A, C, A x C]`` and the names
    of the aliased columns dropped from it.

    ``C`` = the columns of ``F`` constant within every cluster (``names`` are the names of the
    columns of ``F``, default ``x0, x1, ...``); ``A`` and ``A x C`` are added when ``treatment``
    (one value per row, constant within cluster in a CRT) is given. ``b - Q @ (Q.T @ b)`` is
    ``(I - P) b`` of mermboost. Aliased (linearly dependent) columns, e.g. a cluster covariate equal
    to ``A`` or ``A x V`` all zero, are found by R's in-order rank test
    (:func:`clusterhte.mixed.design.independent_columns`, the test lme4 applies to the same
    columns in the same order as ``lmm``'s design) and dropped; they add nothing to the span, so the
    projection is unchanged.
    """
    from clusterhte.mixed.design import independent_columns

    J = codes.max() + 1
    names = list(names) if names is not None else [f"x{k}" for k in range(F.shape[1])]
    first = np.full(J, -1)
    first[codes[::-1]] = np.arange(len(codes))[::-1]  # first row of each cluster
    mask = cluster_constant_mask(F, codes)
    cc = F[first][:, mask]
    cnames = [nm for nm, k in zip(names, mask) if k]
    cols, labels = [np.ones((J, 1))], ["(Intercept)"]
    if treatment is not None:
        a = np.asarray(treatment, float)[first][:, None]
        cols += [a, cc, a * cc]
        labels += ["treatment"] + cnames + [f"treatment:{c}" for c in cnames]
    else:
        cols.append(cc)
        labels += cnames
    Xcc = np.column_stack(cols)
    keep = independent_columns(Xcc)
    Q, _ = np.linalg.qr(Xcc[:, keep])
    return Q, [nm for nm, k in zip(labels, keep) if not k]


def cluster_projector(F: np.ndarray, codes: np.ndarray, treatment: np.ndarray | None = None) -> np.ndarray:
    """The basis Q of :func:`cluster_design` (aliased columns dropped without a report)."""
    return cluster_design(F, codes, treatment)[0]


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


def check_effect_stage(est: Estimator) -> None:
    """The R-learner effect-stage options shared by MERF, MEGB and GPBoost."""
    if not isinstance(est.effect_linear, (bool, np.bool_)):
        raise MethodError(f"method '{est.name}': hyperparameter 'effect_linear' must be true or false, "
                          f"got {est.effect_linear!r}")
    if est.effect_shrinkage not in ("test", "slope"):
        raise MethodError(f"method '{est.name}': hyperparameter 'effect_shrinkage' must be 'test' or 'slope', "
                          f"got {est.effect_shrinkage!r}")
    if est.effect_interval not in ("hull", "shrunk"):
        raise MethodError(f"method '{est.name}': hyperparameter 'effect_interval' must be 'hull' or 'shrunk', "
                          f"got {est.effect_interval!r}")


def seed_streams(random_state: int | None) -> tuple[int, np.random.Generator, np.random.Generator]:
    """(learner seed of the main fit, generator for cluster resampling, generator for refit seeds)."""
    ss = np.random.SeedSequence(random_state)
    main, boot, seeds = ss.spawn(3)
    return (int(main.generate_state(1)[0] & 0x7FFFFFFF), np.random.default_rng(boot),
            np.random.default_rng(seeds))


ORIGIN = "_cluster_of_origin"


def bootstrap_fits(fit_one: Callable[[TrialData, int], object], train: TrialData, B: int,
                   rng: np.random.Generator, seeds: np.random.Generator, n_threads: int = 1,
                   full: Callable[[], object] | None = None):
    """B refits of ``fit_one(sample, seed)`` on cluster-bootstrap samples (clusters within arm).

    A cluster drawn twice enters as two clusters; the column ``_cluster_of_origin`` keeps the
    original cluster so that cross-validation folds can keep the copies together
    (:func:`fold_groups`). The refits run on a thread pool of ``n_threads`` workers (the tree
    builders, LightGBM and GPBoost release the GIL); refit ``k`` gets the ``k``-th sample of
    ``rng`` and the ``k``-th seed of ``seeds`` whatever the number of workers
    (:func:`~clusterhte.methods.bootstrap.ordered_draws`), so the refits do not depend on it.
    ``full``: the full-data fit, run as the first task of the same pool; then the result is
    ``(full(), refits)``.
    """
    tagged = replace(train, frame=train.frame.assign(**{ORIGIN: train.cluster_codes}))
    draw = ordered_draws(lambda: (resample_clusters(tagged, rng), int(seeds.integers(2 ** 31 - 1))))
    tasks = ([None] if full is not None else []) + list(range(B))
    out = parallel_map(lambda t: full() if t is None else draw.run(lambda d: fit_one(*d)), tasks, n_threads)
    if full is None:
        return draw.collect(out)
    return out[0], draw.collect(out[1:])


def fold_groups(data: TrialData) -> np.ndarray:
    """Integer groups for cross-validation folds: the original cluster (copies of a cluster in a
    bootstrap sample share a group, so no cluster is both fitted and held out)."""
    if ORIGIN in data.frame.columns:
        return pd.factorize(data.frame[ORIGIN], sort=True)[0]
    return data.cluster_codes


def crossfit_folds(data: TrialData, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold label per row for cross-fitting and cross-validation, from :mod:`clusterhte.folds`.

    Whole clusters per fold, stratified by arm, the fold count capped by the number of clusters
    per arm (so no fold is empty and every fold has both arms). In a cluster-bootstrap refit the
    copies of one original cluster stay together (:func:`fold_groups`); when a refit holds fewer
    than two distinct original clusters in an arm, the copies are used as clusters instead.
    """
    from clusterhte.folds import cluster_folds, cluster_strata, n_folds

    for groups in (fold_groups(data), data.cluster_codes):
        groups = pd.factorize(groups, sort=True)[0]
        strata = cluster_strata(groups, data.treatment)
        try:
            K = n_folds(groups.max() + 1, int(k), strata)
        except ValueError:
            continue
        return cluster_folds(groups, K, rng, strata)
    raise MethodError(f"{data.name}: cross-fitting needs at least 2 clusters in each arm")


class CrossFitted:
    """A learner refitted on K-1 cluster folds and evaluated on the held-out fold.

    ``fit(F, y)`` stores the out-of-fold predictions; ``predict(F)`` returns them for the training
    matrix (the EM loop calls ``predict`` on the matrix it fitted). No row's prediction uses its own
    cluster, so a flexible learner cannot fit a cluster's mean (treatment effect and random
    intercept included) through cluster covariates that identify the cluster.
    """

    def __init__(self, make: Callable[[int], object], folds: np.ndarray, seed: int,
                 sample_weight: np.ndarray | None = None):
        self.make, self.folds, self.seed, self.sample_weight = make, folds, int(seed), sample_weight

    def fit(self, F, y):
        self.F_ = F
        self.oof_ = np.empty(len(y))
        for k in range(int(self.folds.max()) + 1):
            te = self.folds == k
            m = self.make(self.seed + k)
            if self.sample_weight is None:
                m.fit(F[~te], y[~te])
            else:
                m.fit(F[~te], y[~te], sample_weight=self.sample_weight[~te])
            self.oof_[te] = m.predict(F[te])
        return self

    def predict(self, F):
        if F is not self.F_:
            raise ValueError("a cross-fitted learner predicts only its own training rows")
        return self.oof_


class _Fixed:
    """A learner whose predictions are given (EM for the variance components only)."""

    def __init__(self, fitted: np.ndarray):
        self.fitted = fitted

    def fit(self, F, y):
        return self

    def predict(self, F):
        return self.fitted


@dataclass
class RFit:
    """R-learner fit: the effect model on ``[X, V]``, the outcome stage's EM and diagnostics."""

    effect: object
    em: EMFit
    propensity: float
    info: dict = field(default_factory=dict)

    def cate(self, G: np.ndarray) -> np.ndarray:
        return np.asarray(self.effect.predict(G), float).ravel()


@dataclass
class Calibrated:
    """``tau(x) = c + slope * (g(x) - g_bar)``: an effect model ``g`` shrunk toward the ATE ``c``."""

    model: object
    ate: float
    slope: float
    center: float
    t: float = float("nan")

    def predict(self, G):
        return self.ate + self.slope * (np.asarray(self.model.predict(G), float) - self.center)

    def unshrunk(self) -> "Calibrated":
        """The same effect model at slope 1: ``c + (g - g_bar)``, the estimate before shrinkage."""
        return replace(self, slope=1.0)


def calibrated_effect(model, fitted: np.ndarray, oof: np.ndarray, z: np.ndarray, w: np.ndarray,
                      codes: np.ndarray, shrinkage: str = "slope") -> Calibrated:
    """Shrink an effect model toward the ATE by its out-of-fold calibration slope.

    With R-loss weights ``w`` and pseudo-outcomes ``z``, the ATE is ``c = sum w z / sum w`` and
    ``beta`` is the weighted least-squares slope of ``z`` on the centred out-of-fold predictions
    ``g`` (the "best linear predictor" calibration of Chernozhukov et al.: 1 for a calibrated model,
    0 when the held-out predictions carry no heterogeneity). Its cluster-robust standard error
    ``se`` (clusters ``codes``) gives ``t = beta / se`` and the slope used is the positive-part
    James-Stein shrinkage ``beta * max(0, 1 - 1/t^2)``, clipped to [0, 1]: with no heterogeneity
    (``t ~ N(0, 1)``) the CATEs collapse to the ATE in most trials, while a signal the held-out
    clusters confirm keeps its slope.
    """
    cw = w / w.sum()
    c = float(cw @ z)
    go = oof - cw @ oof
    den = float(cw @ go ** 2)
    slope, t = 0.0, 0.0
    if den > 1e-12 * max(float(cw @ (z - c) ** 2), 1e-300):
        beta = float(cw @ (go * (z - c))) / den
        score = np.bincount(codes, weights=cw * go * (z - c - beta * go))
        se = float(np.sqrt(score @ score)) / den
        t = beta / se if se > 0 else np.inf
        scale = beta if shrinkage == "slope" else 1.0
        slope = float(np.clip(scale * max(0.0, 1.0 - 1.0 / t ** 2), 0.0, 1.0)) if beta > 0 else 0.0
    return Calibrated(model=model, ate=c, slope=slope, center=float(cw @ fitted), t=float(t))


def linear_main_effects(G: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Least-squares fitted values of ``r`` on ``[1, G]``: a linear correction of the outcome model.

    The outcome learner estimates the marginal mean ``E[Y | X, V]`` (no treatment); a forest learns
    the trend of a cluster covariate from some 30 clusters poorly, and in a finite trial a chance
    imbalance of that covariate between arms turns the leftover trend into spurious heterogeneity
    of the pseudo-outcome. Adding the linear fit of the residual on the covariates to the outcome
    model is still an estimate of the marginal mean (the treatment is not used), so the R-learner
    stays unbiased. Aliased columns of ``[1, G]`` are dropped by R's in-order rank test
    (:func:`row_design_aliased` names them); the fitted values do not change.
    """
    from clusterhte.mixed.design import independent_columns

    D = np.column_stack([np.ones(len(r)), G])
    D = D[:, independent_columns(D)]
    coef = np.linalg.lstsq(D, r, rcond=None)[0]
    return D @ coef


def row_design_aliased(G: np.ndarray, names) -> list[str]:
    """Names of the columns of ``[1, G]`` (``"(Intercept)"`` and ``names``) dropped as aliased by
    R's in-order rank test: the design of :func:`linear_main_effects` and of the linear effect
    start (:func:`weighted_linear_fit`)."""
    from clusterhte.mixed.design import independent_columns

    keep = independent_columns(np.column_stack([np.ones(len(G)), G]))
    return [nm for nm, k in zip(["(Intercept)", *names], keep) if not k]


def report_aliased(est: Estimator, data: TrialData, dropped: dict) -> None:
    """Warn (:class:`~clusterhte.mixed.design.AliasedColumnsWarning`) naming the aliased columns
    dropped from the linear parts of a fit, as lme4 and mgcv report a rank-deficient design."""
    import warnings

    from clusterhte.mixed.design import AliasedColumnsWarning

    parts = "; ".join(f"{what}: {cols}" for what, cols in dropped.items() if cols)
    if parts:
        warnings.warn(f"{data.name}: method '{est.name}': linear part rank deficient, dropping aliased "
                      f"column(s) ({parts}); they are linear combinations of the columns before them "
                      f"and add nothing to the fit", AliasedColumnsWarning, stacklevel=4)


@dataclass
class LinearFit:
    """Weighted least-squares fit on ``[1, G]`` over the columns ``keep`` (aliased ones dropped);
    ``keep`` all False is the zero function (no linear start)."""

    keep: np.ndarray
    coef: np.ndarray

    def predict(self, G) -> np.ndarray:
        if not self.keep.any():
            return np.zeros(len(G))
        D = np.column_stack([np.ones(len(G)), G])[:, self.keep]
        return D @ self.coef


def weighted_linear_fit(G: np.ndarray, z: np.ndarray, w: np.ndarray, linear: bool = True) -> LinearFit:
    """The linear R-learner: weighted least squares of the pseudo-outcome ``z`` on ``[1, G]`` with
    the R-loss weights ``w`` (minimises ``sum (r - (a - e) (c + G beta))^2``). Aliased columns are
    dropped by the in-order rank test of :func:`clusterhte.mixed.design.independent_columns`.
    ``linear=False`` returns the zero function."""
    from clusterhte.mixed.design import independent_columns

    p = np.shape(G)[1] + 1
    if not linear:
        return LinearFit(np.zeros(p, bool), np.zeros(0))
    D = np.column_stack([np.ones(len(z)), G])
    keep = independent_columns(D)
    sw = np.sqrt(np.asarray(w, float))
    coef = np.linalg.lstsq(D[:, keep] * sw[:, None], np.asarray(z, float) * sw, rcond=None)[0]
    return LinearFit(keep, coef)


class LinearStart:
    """Effect model ``l(x) + g(x)``: the linear R-learner ``l`` (:func:`weighted_linear_fit`) and a
    tree learner ``g`` (``make``, with ``fit(F, y, sample_weight)``) fitted to its residual, so the
    trees model only what is not linear. With ``linear=False``, ``l = 0``."""

    def __init__(self, model, linear: bool = True):
        self.model, self.linear = model, bool(linear)

    def fit(self, F, y, sample_weight=None):
        w = np.ones(len(y)) if sample_weight is None else sample_weight
        self.linear_ = weighted_linear_fit(F, y, w, self.linear)
        self.model.fit(F, y - self.linear_.predict(F), sample_weight=sample_weight)
        return self

    def predict(self, F):
        return self.linear_.predict(F) + np.asarray(self.model.predict(F), float).ravel()


def _n_rows(ds) -> int:
    """Rows of an unconstructed cross-validation Dataset (LightGBM subsets keep indices,
    GPBoost's keep sliced labels)."""
    idx = getattr(ds, "used_indices", None)
    return len(idx) if idx is not None else len(ds.label)


def linear_start_cv(lib, G: np.ndarray, z: np.ndarray, w: np.ndarray, folds: np.ndarray,
                    linear: bool, dataset_params: dict):
    """(full Dataset, fold pairs, ``fpreproc``, list of per-fold linear fits) for ``lib.cv``
    (LightGBM or GPBoost) on the residual of a linear start fitted *within* each training fold.

    ``fpreproc`` replaces each fold's training and validation sets by new ones whose label is
    ``z - l_k(G)``, ``l_k`` the linear R-learner of the training folds only (so neither the
    choice of rounds nor the out-of-fold predictions ``l_k + g_k`` see the held-out clusters
    through the linear part). The fits are appended in fold order, with the held-out rows.
    """
    pairs = [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in range(int(folds.max()) + 1)]
    lins: list = []

    def fpreproc(dtrain, dvalid, params):
        tr, te = pairs[len(lins)]  # the cv functions call fpreproc once per fold, in fold order
        if _n_rows(dtrain) != len(tr) or _n_rows(dvalid) != len(te):  # pragma: no cover
            raise RuntimeError("cross-validation folds out of order")
        lin = weighted_linear_fit(G[tr], z[tr], w[tr], linear)
        lins.append((te, lin))
        dt = lib.Dataset(G[tr], z[tr] - lin.predict(G[tr]), weight=w[tr], params=dataset_params)
        dv = lib.Dataset(G[te], z[te] - lin.predict(G[te]), weight=w[te], reference=dt, params=dataset_params)
        return dt, dv, params

    return lib.Dataset(G, z, weight=w, params=dataset_params, free_raw_data=False), pairs, fpreproc, lins


def r_learner(G: np.ndarray, y: np.ndarray, a: np.ndarray, codes: np.ndarray, folds: np.ndarray,
              outcome: Callable[[int], object] | np.ndarray, fit_effect: Callable, seed: int,
              passes: int = 1, max_iter: int = 200, tol: float = 1e-8, names=None) -> RFit:
    """R-learner with a random intercept, for a two-arm CRT (one EM, one effect regression).

    ``G`` = ``[X, V]`` (no treatment column), ``a`` the 0/1 treatment, ``folds`` cluster folds.

    1. *Outcome stage* (the EM of the module docstring with a cross-fitted learner):
       ``y = m(X, V) + b_i + e`` where ``m`` is the marginal mean ``E[Y | X, V]`` and its
       predictions are out-of-fold (:class:`CrossFitted`). ``outcome`` is either
       ``make_learner(seed)`` or, already cross-fitted, the vector ``m`` (then the EM only estimates
       the variance components and the BLUPs). The BLUPs are projected off the cluster-level span of
       ``[1, C, A, A x C]`` (:func:`cluster_projector`, ``C`` = cluster covariates), so the random
       intercept cannot take the treatment effect, nor its linear modification by ``C``.
    2. *Effect stage* (Nie & Wager's R-loss with the propensity known by design): with
       ``r = y - m - b~`` and ``e = mean(a)`` (the treated share of rows, so ``sum (a - e) = 0``
       and a constant effect is estimated by the difference of the arms' mean residuals; the
       design probability, the share of treated clusters, differs from it when cluster sizes
       differ between arms), ``tau`` minimises ``sum_ij (r_ij - (a_ij - e) tau(x_ij))^2``, i.e. a
       weighted regression of the pseudo-outcome ``r / (a - e)`` with weights ``(a - e)^2``.
       Because ``A`` is randomized, ``E[(a - e) (m - m_hat) | X, V] = 0``: an imperfect ``m`` adds
       noise, not bias. Before dividing, :func:`linear_main_effects` removes what ``m`` left of
       the covariates' linear trend (a least-squares fit of the residual on ``[1, G]``).
       ``fit_effect(G, z, w, folds, seed, codes, z_test)`` fits the effect model to ``z`` and
       returns it (with ``predict``) and a diagnostics dict; ``z_test`` is the same pseudo-outcome
       without the BLUPs subtracted, for the calibration (:func:`calibrated_effect`): the projected
       BLUPs remove the cluster-level noise in every direction *except* ``[1, C, A, A x C]``, so
       residuals with them would understate the cluster-level noise of a ``V``-driven effect and
       make the calibration's cluster-robust ``t`` too large.

    ``passes``: learner passes of the outcome stage (each refits the cross-fitted learner on
    ``y - b~``); within a pass the EM iterates the variance components to ``tol`` (at most
    ``max_iter`` iterations) with the learner's predictions fixed.
    """
    y, a = np.asarray(y, float), np.asarray(a, float)
    names = list(names) if names is not None else [f"x{k}" for k in range(G.shape[1])]
    Q, dropped_projection = cluster_design(G, codes, treatment=a, names=names)
    s2 = float(np.var(y))
    b = np.zeros(codes.max() + 1)
    m = np.asarray(outcome, float) if not callable(outcome) else None
    for p in range(max(int(passes), 1) if m is None else 1):
        if callable(outcome):
            m = CrossFitted(outcome, folds, seed).fit(G, y - b[codes]).oof_
        # EM for (s_b^2, s_e^2, b~) with the learner's out-of-fold predictions held fixed
        em = em_random_intercept(G, y, codes, lambda it: _Fixed(m), max_iter=int(max_iter), tol=float(tol),
                                 project=Q, sigma2_b=s2 / 2, sigma2_e=s2 / 2)
        b = em.b
    em.n_iter = p + 1
    e = float(a.mean())
    w = (a - e) ** 2
    r_full = y - m
    r_full = r_full - linear_main_effects(G, r_full)
    r = y - m - em.b[codes]
    r = r - linear_main_effects(G, r)
    effect, info = fit_effect(G, r / (a - e), w, folds, seed + 1000, codes, r_full / (a - e))
    info["dropped"] = {k: v for k, v in (("random-intercept projection", dropped_projection),
                                         ("linear main effects and effect start", row_design_aliased(G, names)))
                       if v}
    return RFit(effect=effect, em=em, propensity=e, info=info)


def result_with_bootstrap(point: np.ndarray, draws: list[np.ndarray], level: float = 0.95,
                          info: dict | None = None) -> CateResult:
    """CateResult with the full-data point and cluster-bootstrap intervals point ± t_{B-1} SD
    (:func:`clusterhte.methods.bootstrap.bootstrap_result` with ``student_t=True``)."""
    return bootstrap_result(point, np.column_stack(draws) if draws else None, level, info, student_t=True)


def unshrunk_fit(fit: RFit) -> RFit:
    """An R-learner fit with its effect model at slope 1 (:meth:`Calibrated.unshrunk`)."""
    return replace(fit, effect=fit.effect.unshrunk())


def uses_hull(effect_interval: str, fit, boot) -> bool:
    """Whether the hull interval applies: ``effect_interval="hull"``, an R-learner fit (the only
    form with a shrinkage) and bootstrap refits to build intervals from."""
    return effect_interval == "hull" and isinstance(fit, RFit) and bool(boot)


def bootstrap_cate_result(cate: Callable[[object], np.ndarray], fit, boot: list, effect_interval: str,
                          info: dict | None = None) -> CateResult:
    """Point ``cate(fit)`` with cluster-bootstrap intervals from the refits ``boot``
    (:func:`result_with_bootstrap`); with ``effect_interval="hull"`` the hull of that interval
    and the unshrunk estimate's (:func:`hull_interval`)."""
    res = result_with_bootstrap(cate(fit), [cate(b) for b in boot], info=info)
    if not uses_hull(effect_interval, fit, boot):
        return res
    return hull_interval(res, result_with_bootstrap(cate(unshrunk_fit(fit)), [cate(unshrunk_fit(b)) for b in boot]))


def hull_interval(shrunk: CateResult, unshrunk: CateResult) -> CateResult:
    """Point of ``shrunk``, interval = the hull of both intervals (``effect_interval="hull"``).

    The test shrinkage is a pretest estimator: when the calibration test cannot detect a
    heterogeneity that exists (few clusters, a cluster-level modifier), the shrunk estimate and
    every refit collapse to the ATE and the interval, centred there with the ATE's width, misses the
    rows whose effect is far from the ATE. The interval of the unshrunk estimate does not depend
    on the test, and the hull contains it, so its coverage is at least the unshrunk interval's;
    where the test confirms the heterogeneity the two nearly coincide. The draws and the ATE
    interval stay the shrunk ones.
    """
    info = dict(shrunk.info)
    info.update(interval="hull", shrunk_lower=shrunk.lower, shrunk_upper=shrunk.upper,
                unshrunk_point=unshrunk.point)
    return CateResult(shrunk.point, np.minimum(shrunk.lower, unshrunk.lower),
                      np.maximum(shrunk.upper, unshrunk.upper), draws=shrunk.draws, info=info)


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
    """Shared fit/predict of MERF and MEGB; subclasses provide ``_learner(seed)`` (the EM's learner)
    and ``_fit_effect(G, z, w, folds, seed, codes)`` (the R-learner's effect model)."""

    designs = ("crt",)
    has_intervals = True

    def _learner(self, seed: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit_effect(self, G, z, w, folds, seed, codes, z_test):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self) -> None:
        check_nonnegative_int(self, max_iter=self.max_iter, n_bootstrap=self.n_bootstrap, cv_folds=self.cv_folds,
                              outcome_passes=self.outcome_passes)
        for k in ("max_iter", "outcome_passes"):
            if getattr(self, k) < 1:
                raise MethodError(f"method '{self.name}': hyperparameter '{k}' must be >= 1, got {getattr(self, k)!r}")
        if self.cv_folds < 2:
            raise MethodError(f"method '{self.name}': hyperparameter 'cv_folds' must be >= 2, got {self.cv_folds!r}")
        if self.tol is None or not np.isfinite(self.tol) or self.tol < 0:
            raise MethodError(f"method '{self.name}': hyperparameter 'tol' must be >= 0, got {self.tol!r}")
        check_effect_stage(self)
        if self.learner_form not in ("r", "s", "t"):
            raise MethodError(f"method '{self.name}': hyperparameter 'learner_form' must be 'r' (R-learner on "
                              f"the EM fit), 's' (one learner on [X, V, A]) or 't' (one learner per arm), "
                              f"got {self.learner_form!r}")

    def _library_threads(self) -> int:
        """Threads of the learner library (scikit-learn trees, LightGBM): 1 while the full-data fit
        and the bootstrap refits run ``n_threads`` at a time; ``n_threads`` without refits."""
        return 1 if getattr(self, "_in_refits", False) else int(self.n_threads)

    def _stages(self, refit: bool):
        """(outcome learner factory, effect-stage function) of the full-data fit or of a refit."""
        return self._learner, self._fit_effect

    def _fit_one(self, train: TrialData, seed: int, refit: bool = False):
        codes = train.cluster_codes
        learner, fit_effect = self._stages(refit)
        if self.learner_form == "r":
            folds = crossfit_folds(train, int(self.cv_folds), np.random.default_rng(seed))
            return r_learner(train.X(), train.outcome, train.treatment, codes, folds, learner,
                             fit_effect, seed, passes=int(self.outcome_passes), names=train.covariates)
        F = features(train)
        Q = cluster_projector(train.X(), codes, treatment=train.treatment) if self.project_cluster_constant else None
        s2 = float(np.var(train.outcome))
        # start s_b^2 = s_e^2 = var(y)/2 (the R codes start at s_e^2 = 1, D = I; scale-free here)
        if self.learner_form == "t":
            def make(it):
                return ArmwiseLearner(learner, seed)
        else:
            def make(it):
                return learner(seed)
        return em_random_intercept(F, train.outcome, codes, make,
                                   max_iter=int(self.max_iter), tol=float(self.tol), project=Q,
                                   sigma2_b=s2 / 2, sigma2_e=s2 / 2)

    def _fit(self, train: TrialData) -> None:
        check_crt(self, train)
        self._check()
        seed, rng, seeds = seed_streams(self.random_state)
        self.covariates_ = train.covariates
        # the full-data fit and the refits share one pool of n_threads workers, one library thread
        # each (600-row problems gain little from library threads, LightGBM loses); without
        # refits the full-data fit alone gets the library's n_threads
        self._in_refits = bool(int(self.n_bootstrap))
        try:
            self.fit_, self.boot_ = bootstrap_fits(
                lambda d, s: self._fit_one(d, s, refit=True), train, int(self.n_bootstrap), rng, seeds,
                n_threads=int(self.n_threads), full=lambda: self._fit_one(train, seed))
        finally:
            self._in_refits = False
        if isinstance(self.fit_, RFit):
            self.dropped_ = self.fit_.info["dropped"]
        elif self.project_cluster_constant:
            cols = cluster_design(train.X(), train.cluster_codes, train.treatment, train.covariates)[1]
            self.dropped_ = {"random-intercept projection": cols} if cols else {}
        else:
            self.dropped_ = {}
        report_aliased(self, train, self.dropped_)

    def _cate(self, fit, test: TrialData) -> np.ndarray:
        if isinstance(fit, RFit):
            return fit.cate(test.X(self.covariates_))
        return (fit.learner.predict(features(test, 1.0, self.covariates_))
                - fit.learner.predict(features(test, 0.0, self.covariates_)))

    def _predict(self, test: TrialData) -> CateResult:
        missing = [c for c in self.covariates_ if c not in test.frame.columns]
        if missing:
            raise MethodError(f"method '{self.name}': prediction table lacks covariate(s) {missing}")
        point = self._cate(self.fit_, test)
        em = self.fit_.em if isinstance(self.fit_, RFit) else self.fit_
        info = {"sigma2_b": em.sigma2_b, "sigma2_e": em.sigma2_e, "em_iterations": em.n_iter,
                "em_converged": em.converged, "learner_form": self.learner_form, "dropped": self.dropped_}
        if isinstance(self.fit_, RFit):
            info.update(self.fit_.info)
        return self._interval(point, test, info)

    def _interval(self, point: np.ndarray, test: TrialData, info: dict) -> CateResult:
        return bootstrap_cate_result(lambda f: self._cate(f, test), self.fit_, self.boot_, self.effect_interval,
                                     info=info)


class MERF(_EMTrees):
    """MERF: mixed-effects random forest (paper label "MERF").

    Estimand: ``tau(x, v) = E[Y(1) - Y(0) | X = x, V = v]`` in a CRT, random intercept set to 0.

    R original: ``LongituRF::MERF`` (Capitaine et al. 2021; Hajjem et al. 2014) with a random
    intercept (``Z = 1``), ``ntree`` trees, an S-learner on ``[X, V, A]``; also the Python ``merf``
    package (spec §3.6). Learner: scikit-learn ``RandomForestRegressor(n_estimators,
    min_samples_leaf, max_features)``.

    * ``learner_form="r"`` (default): R-learner on the cross-fitted EM fit (module docstring);
      the effect forest has leaves of at least ``effect_min_samples_leaf`` rows and is calibrated.
    * ``learner_form="s", project_cluster_constant=False`` is the R original. Measured weakness:
      the random intercept swallows cluster-level effects and the forest rarely splits on ``A``
      (``crt_constant`` fixture, true effect 1.0: mean CATE 0.38 even with the projection).
    * ``learner_form="t"``: one forest per arm (spec §3.8); invents heterogeneity (null-effect
      CATE SD 0.42, truth 0) because the arm difference of two noisy forests is noise.
    * ``max_iter``/``tol``: EM iterations of the s/t forms (``tol`` is LongituRF's ``delta``);
      the r form uses ``outcome_passes`` learner passes. The EM starts at
      ``s_b^2 = s_e^2 = var(y)/2`` instead of 1; ``max_features=1.0`` (bagging) whereas
      ``randomForest`` uses ``mtry = p/3``.
    * ``effect_linear``: the effect forest starts from the linear R-learner (module docstring);
      ``effect_shrinkage``: ``"test"`` (default) or ``"slope"`` (the previous calibration);
      ``effect_interval``: ``"hull"`` (default) or ``"shrunk"`` (module docstring, Intervals).
    * Intervals: cluster bootstrap (module docstring); ``n_bootstrap=0`` gives NaN intervals.
      The refits grow ``bootstrap_trees`` trees per forest (even, capped at ``n_estimators``);
      their effect forests' Monte Carlo noise is removed, so the width does not depend on it
      beyond Monte Carlo error.
    * ``n_threads``: the full-data fit and the refits run ``n_threads`` at a time on a thread pool
      (scikit-learn's tree builder releases the GIL), one thread each; refit ``k`` keeps the
      ``k``-th sample and seed, so the estimates are the same for every ``n_threads``. Without
      refits the full-data forests grow their trees on ``n_threads`` threads (same trees).
    """

    name = "merf"
    label = "MERF"
    library = "scikit-learn"

    def __init__(self, n_estimators: int = 300, min_samples_leaf: int = 5, max_features: float = 1.0,
                 max_iter: int = 20, tol: float = 1e-3, project_cluster_constant: bool = True,
                 learner_form: str = "r", cv_folds: int = 5, outcome_passes: int = 1,
                 effect_min_samples_leaf: int = 40, effect_linear: bool = True, effect_shrinkage: str = "test",
                 effect_interval: str = "hull", n_bootstrap: int = 50, bootstrap_trees: int = 100,
                 n_threads: int = 1,
                 random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    def _check(self) -> None:
        mf = self.max_features
        if isinstance(mf, bool) or not isinstance(mf, (int, float, np.integer, np.floating)) or not np.isfinite(mf) \
                or (isinstance(mf, (float, np.floating)) and mf > 1.0):
            raise MethodError(f"method 'merf': hyperparameter 'max_features' must be a fraction in (0, 1] of the "
                              f"covariates or a whole number of them, got {mf!r}")
        super()._check()
        check_positive(self, n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
                       max_features=self.max_features, n_threads=self.n_threads,
                       effect_min_samples_leaf=self.effect_min_samples_leaf)
        check_nonnegative_int(self, effect_min_samples_leaf=self.effect_min_samples_leaf,
                              bootstrap_trees=self.bootstrap_trees)
        if self.bootstrap_trees < 2 or self.bootstrap_trees % 2:
            raise MethodError(f"method 'merf': hyperparameter 'bootstrap_trees' must be even and >= 2 (each "
                              f"refit's effect forest is split in two to measure its Monte Carlo noise), "
                              f"got {self.bootstrap_trees!r}")

    def _refit_trees(self) -> int:
        """Trees of every forest of a bootstrap refit: ``bootstrap_trees``, at most ``n_estimators``,
        rounded down to an even number."""
        return max(2, 2 * (min(int(self.bootstrap_trees), int(self.n_estimators)) // 2))

    def _stages(self, refit: bool):
        trees = self._refit_trees() if refit else int(self.n_estimators)

        def learner(seed):
            return self._forest(seed, self.min_samples_leaf, trees)

        def fit_effect(*args):
            return self._fit_effect(*args, trees=trees)

        return learner, fit_effect

    def _forest(self, seed: int, min_samples_leaf: int, trees: int | None = None):
        return RandomForest(n_estimators=int(trees or self.n_estimators), min_samples_leaf=int(min_samples_leaf),
                            max_features=self.max_features, n_jobs=self._library_threads(),
                            random_state=seed % (2 ** 31 - 1))

    def _interval(self, point: np.ndarray, test: TrialData, info: dict) -> CateResult:
        """R form: refits with ``bootstrap_trees`` trees, their effect forests' Monte Carlo noise
        removed (:func:`~clusterhte.methods.bootstrap.monte_carlo_corrected_result`)."""
        if self.learner_form != "r" or not self.boot_:
            return super()._interval(point, test, info)
        from clusterhte.methods.bootstrap import monte_carlo_corrected_result

        G = test.X(self.covariates_)
        scale = self._refit_trees() / float(self.n_estimators)
        info["bootstrap_trees"] = self._refit_trees()

        def corrected(pt, effects, inf=None):
            pairs = [forest_cate_halves(e, G) for e in effects]
            return monte_carlo_corrected_result(pt, np.column_stack([p[0] for p in pairs]),
                                                np.column_stack([p[1] for p in pairs]), scale, info=inf)

        res = corrected(point, [m.effect for m in self.boot_], info)
        if not uses_hull(self.effect_interval, self.fit_, self.boot_):
            return res
        return hull_interval(res, corrected(self.fit_.effect.unshrunk().predict(G),
                                            [m.effect.unshrunk() for m in self.boot_]))

    def _fit_effect(self, G, z, w, folds, seed, codes, z_test, trees=None):
        def make(k):
            return self._forest(k, self.effect_min_samples_leaf, trees)

        def start(k):
            return LinearStart(make(k), self.effect_linear)

        forest = start(seed).fit(G, z, sample_weight=w)
        oof = CrossFitted(start, folds, seed + 1, sample_weight=w).fit(G, z).oof_
        cal = calibrated_effect(forest, forest.predict(G), oof, z_test, w, codes, self.effect_shrinkage)
        return cal, {"effect_slope": cal.slope, "effect_t": cal.t}

    def _learner(self, seed: int):
        return self._forest(seed, self.min_samples_leaf)


class RandomForest:
    """scikit-learn's ``RandomForestRegressor(n_estimators, min_samples_leaf, max_features,
    random_state)`` (bootstrap, squared error, no depth limit), grown tree by tree with sklearn's own
    Cython tree builder but without its per-tree Python machinery (estimator clone, parameter
    validation, a fresh ``RandomState`` with OS entropy per tree and per bootstrap draw, joblib,
    config contexts), which took some 60-70 % of a 500-row forest's fit time.

    The same random numbers are used in the same order: one ``randint(2^31 - 1)`` of the forest's
    ``RandomState`` per tree (``sklearn.ensemble._base._set_random_states``); with that seed the
    bootstrap draw (``randint(0, n, n)``, or ``choice(n, n, p = w / sum w)`` when weights are given,
    as ``sklearn.ensemble._forest._generate_sample_indices``) and, re-seeded, the splitter's seed
    (``DecisionTreeRegressor._fit``). Trees are sklearn ``Tree`` objects fitted on float32 ``X`` with
    the bootstrap counts as weights; ``predict`` sums the tree predictions in tree order and divides
    by their number, as sklearn's forest does. Predictions are identical bit for bit
    (``tests/test_em_trees.py::test_fast_forest_is_sklearns_forest``).
    """

    def __init__(self, n_estimators: int = 100, min_samples_leaf: int = 1, max_features=1.0,
                 n_jobs: int = 1, random_state: int = 0):
        self.n_estimators, self.min_samples_leaf = int(n_estimators), int(min_samples_leaf)
        self.max_features, self.n_jobs, self.random_state = max_features, int(n_jobs), int(random_state)

    def _max_features(self, p: int) -> int:
        mf = self.max_features
        if mf is None:
            return p
        if isinstance(mf, (int, np.integer)) and not isinstance(mf, bool):
            if not 1 <= mf <= p:
                raise ValueError(f"max_features must be in [1, {p}], got {mf!r}")
            return int(mf)
        if not 0.0 < float(mf) <= 1.0:
            raise ValueError(f"max_features must be in (0, 1] as a fraction, got {mf!r}")
        return max(1, int(float(mf) * p))

    def fit(self, X, y, sample_weight=None):
        from sklearn.tree._criterion import MSE
        from sklearn.tree._splitter import BestSplitter
        from sklearn.tree._tree import DepthFirstTreeBuilder, Tree

        X = np.asarray(X, dtype=np.float32)
        y = np.ascontiguousarray(np.asarray(y, dtype=np.float64).reshape(-1, 1))
        n, p = X.shape
        if y.shape[0] != n:
            raise ValueError(f"X has {n} rows but y has {y.shape[0]}")
        if not (np.isfinite(X).all() and np.isfinite(y).all()):
            raise ValueError("random forest: X and y must be finite")
        prob = None
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=np.float64)
            if sw.shape != (n,) or not np.isfinite(sw).all() or (sw < 0).any() or not sw.sum() > 0:
                raise ValueError("random forest: sample_weight must be finite, >= 0, not all 0, one per row")
            prob = sw / np.sum(sw)
        mf = self._max_features(p)
        msl = self.min_samples_leaf
        max_int = np.iinfo(np.int32).max
        forest_rs = np.random.RandomState(self.random_state)
        seeds = [forest_rs.randint(max_int) for _ in range(self.n_estimators)]
        classes = np.array([1], dtype=np.intp)

        def grow(seed, rs):
            rs.seed(seed)
            idx = rs.randint(0, n, n) if prob is None else rs.choice(n, n, replace=True, p=prob)
            counts = np.bincount(idx.astype(np.int32), minlength=n).astype(np.float64)
            rs.seed(seed)                                   # DecisionTreeRegressor._fit's RandomState
            tree = Tree(p, classes, 1)
            DepthFirstTreeBuilder(BestSplitter(MSE(1, n), mf, msl, 0.0, rs, None), max(2, 2 * msl), msl, 0.0,
                                  max_int, 0.0).build(tree, X, y, counts, None)
            return tree

        if self.n_jobs > 1 or self.n_jobs == -1:           # the tree builder releases the GIL
            # each thread grows one contiguous block of trees (no per-tree dispatch), in order
            blocks = np.array_split(np.asarray(seeds), n_workers(self.n_jobs, len(seeds)))

            def grow_block(block):
                rs = np.random.RandomState(0)
                return [grow(int(s), rs) for s in block]

            self.estimators_ = [t for b in parallel_map(grow_block, blocks, self.n_jobs) for t in b]
        else:
            rs = np.random.RandomState(0)
            self.estimators_ = [grow(s, rs) for s in seeds]
        self.n_features_in_ = p
        return self

    def tree_predictions(self, X) -> np.ndarray:
        """(trees, rows) predictions of every tree."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} features, got shape {X.shape}")
        return np.stack([t.predict(X)[:, 0] for t in self.estimators_])

    def predict(self, X) -> np.ndarray:
        # sklearn: zeros, += each tree's prediction in order, /= number of trees; a sum over axis 0
        # of a C-ordered (trees, rows) array adds the rows in the same order
        return self.tree_predictions(X).sum(axis=0) / len(self.estimators_)


def forest_cate_halves(cal: "Calibrated", G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(CATE, difference of the CATEs from the two halves of the trees) of a calibrated
    linear-start forest ``ate + slope * (l + f - center)``: ``f`` is the mean of the trees, the
    halves use the first and the second half of them (independent Monte Carlo draws)."""
    ls = cal.model
    forest = ls.model
    P = forest.tree_predictions(G)                 # (trees, rows); forest.predict = their mean
    h = P.shape[0] // 2
    tau = cal.ate + cal.slope * (ls.linear_.predict(G) + P.mean(axis=0) - cal.center)
    return tau, cal.slope * (P[:h].mean(axis=0) - P[h:2 * h].mean(axis=0))


class _LGBMRegressor:
    """Minimal fit/predict wrapper around ``lightgbm.train`` (deterministic, single-threaded).

    The training booster is kept (``keep_training_booster=True``): ``lightgbm.train`` otherwise
    rebuilds it from its model string (a quarter of a 500-round fit on 500 rows); the trees and the
    predictions are the same bit for bit."""

    def __init__(self, params: dict, num_boost_round: int):
        self.params, self.num_boost_round = params, num_boost_round

    def fit(self, F, y, sample_weight=None):
        import lightgbm as lgb

        self.booster_ = lgb.train(self.params, lgb.Dataset(F, y, weight=sample_weight, params={"verbose": -1}),
                                  num_boost_round=self.num_boost_round, keep_training_booster=True)
        return self

    def predict(self, F):
        return self.booster_.predict(F, num_threads=self.params["num_threads"])


class MEGB(_EMTrees):
    """MEGB: mixed-effects gradient boosting (paper label "MEGB").

    Estimand: ``tau(x, v) = E[Y(1) - Y(0) | X = x, V = v]`` in a CRT, random intercept set to 0.

    R original: CRAN ``MEGB`` (Olaniran & Olaniran): MERF's EM with ``gbm`` inside,
    ``MEGB(X, Y, id, Z, iter = 100, ntree = 500, shrinkage = 0.05, interaction.depth = 1,
    n.minobsinnode = 5, delta = 0.001)``, an S-learner on ``[X, V, A]``.

    Learner: LightGBM (``lightgbm.train``, L2 loss, ``n_estimators`` rounds, ``learning_rate``,
    ``max_depth`` with ``num_leaves = 2**max_depth``, ``min_data_in_leaf = min_samples_leaf``,
    row subsampling ``subsample`` per round; histogram splits rather than gbm's exact ones;
    ``min_sum_hessian_in_leaf`` is LightGBM's default 1e-3: at 0 LightGBM 4.7 aborted with "Check
    failed: (best_split_info.left_count) > (0)" on a 2:1 trial, whose R-learner weights differ by
    arm, and on 1:1 trials 1e-3 gives the same trees as 0).

    * ``learner_form="r"`` (default): R-learner on the cross-fitted EM fit (module docstring);
      the outcome boosters run ``n_estimators`` rounds, the effect booster's rounds are chosen by
      cluster cross-validation with ``early_stopping_rounds`` (up to ``n_estimators``), then it is
      calibrated.
    * ``learner_form="s", project_cluster_constant=False`` is the R original (with
      ``max_depth >= 2``: with gbm's stumps an S-learner is additive in A, the CATE constant).
      Measured weakness: the random intercept takes the treatment effect (spec §6.4).
    * ``learner_form="t"``: one booster per arm, 500 rounds without early stopping: invents
      heterogeneity (null-effect CATE SD 0.42) and soaks up the cluster intercepts
      (``s_b^2`` ~0.002 against a true 0.11); pointwise coverage 0.79-0.85.
    * ``subsample = 0.5`` follows gbm's ``bag.fraction``; the EM starts at ``s_b^2 = s_e^2 = var(y)/2``.
    * ``effect_linear``: the effect booster starts from the linear R-learner (module docstring);
      ``effect_shrinkage``: ``"test"`` (default) or ``"slope"`` (the previous calibration);
      ``effect_interval``: ``"hull"`` (default) or ``"shrunk"`` (module docstring, Intervals).
    * Intervals: cluster bootstrap (module docstring); ``n_bootstrap=0`` gives NaN intervals.
    * ``n_threads``: the full-data fit and the refits run ``n_threads`` at a time on a thread pool
      (LightGBM releases the GIL), one LightGBM thread each; refit ``k`` keeps the ``k``-th
      sample and seed, so the estimates are the same for every ``n_threads``. LightGBM never gets
      more than one thread: with 2 its 600-row fits were 3-60 times slower (OpenMP on a loaded
      2-core machine).
    """

    name = "megb"
    label = "MEGB"
    library = "lightgbm"

    def __init__(self, n_estimators: int = 500, learning_rate: float = 0.05, max_depth: int = 3,
                 min_samples_leaf: int = 5, subsample: float = 0.5, max_iter: int = 100,
                 tol: float = 1e-3, project_cluster_constant: bool = True, learner_form: str = "r",
                 cv_folds: int = 5, outcome_passes: int = 1, early_stopping_rounds: int = 20,
                 effect_linear: bool = True, effect_shrinkage: str = "test", effect_interval: str = "hull",
                 n_bootstrap: int = 50, n_threads: int = 1, random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    def _check(self) -> None:
        super()._check()
        check_positive(self, n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                       min_samples_leaf=self.min_samples_leaf, subsample=self.subsample,
                       n_threads=self.n_threads, early_stopping_rounds=self.early_stopping_rounds)
        if isinstance(self.max_depth, bool) or not float(self.max_depth).is_integer() or self.max_depth < 2:
            raise MethodError(
                f"method '{self.name}': hyperparameter 'max_depth' must be an integer >= 2 (depth 1 "
                f"makes the S-learner additive in the treatment, so the CATE is constant); got {self.max_depth!r}")
        if self.subsample > 1:
            raise MethodError(f"method '{self.name}': hyperparameter 'subsample' must be in (0, 1], got {self.subsample!r}")

    def _library_threads(self) -> int:
        """Always 1: LightGBM's OpenMP threads made 600-row fits 3-60 times slower on a loaded
        2-core machine; ``n_threads`` sets how many fits (full data, refits) run at once."""
        return 1

    def _learner(self, seed: int):
        params = {"objective": "regression", "learning_rate": float(self.learning_rate),
                  "max_depth": int(self.max_depth), "num_leaves": 2 ** int(self.max_depth),
                  "min_data_in_leaf": int(self.min_samples_leaf), "min_sum_hessian_in_leaf": 1e-3,
                  "bagging_fraction": float(self.subsample), "bagging_freq": 1 if self.subsample < 1 else 0,
                  "num_threads": self._library_threads(), "deterministic": True, "force_row_wise": True,
                  "seed": int(seed % (2 ** 31 - 1)), "verbose": -1}
        return _LGBMRegressor(params, int(self.n_estimators))

    def _fit_effect(self, G, z, w, folds, seed, codes, z_test):
        import lightgbm as lgb

        params = self._learner(seed).params
        ds, pairs, fpreproc, lins = linear_start_cv(lgb, G, z, w, folds, self.effect_linear, {"verbose": -1})
        cv = lgb.cv(params, ds, num_boost_round=int(self.n_estimators), stratified=False, folds=pairs,
                    fpreproc=fpreproc, return_cvbooster=True,
                    callbacks=[lgb.early_stopping(int(self.early_stopping_rounds), verbose=False)])
        boosters = cv.pop("cvbooster").boosters
        rounds = len(next(iter(cv.values())))
        oof = np.empty(len(z))
        for (te, lin), bst in zip(lins, boosters):
            oof[te] = lin.predict(G[te]) + bst.predict(G[te], num_iteration=rounds)
        booster = LinearStart(_LGBMRegressor(params, rounds), self.effect_linear).fit(G, z, sample_weight=w)
        cal = calibrated_effect(booster, booster.predict(G), oof, z_test, w, codes, self.effect_shrinkage)
        return cal, {"effect_rounds": rounds, "effect_slope": cal.slope, "effect_t": cal.t}
