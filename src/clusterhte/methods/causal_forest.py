"""CF: causal forest with the known design propensity and cluster half-sampling intervals (spec §3.5).

Estimand: ``tau(x, v) = E[Y(1) - Y(0) | X = x, V = v]`` in a cluster-randomized trial. A causal
forest estimates it directly (no random effect is modelled; clustering enters through the
cross-fitting folds and the intervals).

Algorithm (as ``grf::causal_forest(X, Y, W, W.hat = e, Y.hat = <estimated>)``):

1. ``Y.hat``: cross-fitted regression-forest estimate of ``E[Y | X, V]``. The folds are made of
   whole clusters, stratified by arm (:mod:`clusterhte.folds`); the fold count is ``yhat_folds``
   capped at the number of clusters of the smaller arm, so every fold holds a treated and a
   control cluster and none is empty (a 10-cluster trial with 5 per arm gets at most 5 folds).
   Each held-out fold is predicted by a forest fitted on the other folds.
2. Centre: ``W~ = A - e`` with ``e`` the known design propensity, the share of treated clusters
   (0.5 in a 1:1 CRT, spec's ``W.hat = 0.5``), and ``Y~ = Y - Y.hat``. The leaf estimates carry a
   local intercept, so a constant error in ``W.hat`` leaves each leaf's estimate unchanged, but the
   splits are chosen on ``W~`` as given: in a 2:1 trial of 36 clusters, ``W.hat = 0.5`` moved the
   CATEs by up to 0.10 (their mean by 0.002).
3. Honest causal forest on ``(X, V)`` solving the local moment equation
   ``E[(Y~ - tau(x) W~ - beta(x)) (W~; 1) | x] = 0``; ``tau(x)`` is the CATE. By default
   (``subsample = "cluster"``) every tree is grown as grf grows it when given ``clusters``: it
   draws ``r = max(2, floor(max_samples * M))`` of the ``M`` clusters of each arm, chooses its
   splits on ``ceil(r/2)`` of them and computes its leaf estimates on the other ``floor(r/2)``
   (:func:`cluster_tree_draws`); the trees are econml's GRF trees (splitting criterion ``"mse"``,
   ``min_balancedness_tol = 0.45``) built from these two row sets (:class:`ClusterHonestForest`).
   ``subsample = "row"`` is the former behaviour: ``econml.grf.CausalForest``, whose trees
   subsample rows and split rows for honesty.

Why clusters, not rows (measured on the scenario battery, issue 11). With row subsampling, the
rows of one cluster fall on both sides of a tree's honesty split. Treatment is constant within a
cluster, so a split that isolates a few clusters (for example on a cluster covariate) turns their
random intercepts into an apparent treatment effect, and the leaf estimate made on the *other*
rows of the same clusters confirms it: honesty does not protect against cluster noise. Under no
effect (tau = 0, ~600 rows, 40 clusters, outcome SD 1) the SD of the CATEs was 0.22 on average and
above 0.25 in 8 of 20 trials (also at paper settings; more trees do not remove it). With the
honesty split made by cluster, splits are chosen on clusters whose noise is independent of the
leaf estimates. Battery, quick settings, 20 replicates, means (``python -m
clusterhte.evaluate.battery --methods cf --scenarios null,cluster,linear,nonlinear,small --reps 20
--settings quick``), rows (before: ``subsample = "row"``, leaf 5) against clusters (leaf 3); true
CATE SD 0, 0.77, 0.57, 0.43 and 0.56:

========= =============== =============== ============= ==================== ==============
scenario  PEHE            CATE SD          corr. truth   pointwise coverage   mean width
========= =============== =============== ============= ==================== ==============
null      0.249 -> 0.202  0.218 -> 0.166   -             0.978 -> 0.959       1.17 -> 0.95
cluster   0.562 -> 0.488  0.835 -> 0.581   0.84 -> 0.87  0.901 -> 0.852       2.05 -> 1.47
linear    0.381 -> 0.352  0.459 -> 0.424   0.78 -> 0.83  0.906 -> 0.867       1.51 -> 1.20
nonlinear 0.354 -> 0.313  0.350 -> 0.320   0.68 -> 0.75  0.912 -> 0.883       1.36 -> 1.11
small     0.652 -> 0.517  0.586 -> 0.394   0.63 -> 0.79  0.869 -> 0.925       2.30 -> 2.18
========= =============== =============== ============= ==================== ==============

Under the null 8 of the 20 row-forest replicates had a CATE SD above 0.25 (largest 0.34), none of
the cluster-forest ones (largest 0.24); intervals contain 0 for 96% of rows. The intervals are
narrower because less cluster noise enters the estimates, and coverage stays in [0.85, 0.995].

Leaf size. ``min_samples_leaf`` is econml's (a minimum on each honest half, any mix of arms), and
a node is split when it holds ``2 * min_samples_leaf`` rows. The default 3 (was 5) follows from
the battery: with cluster honesty the variance falls and the smoothing bias of the leaves
dominates the pointwise error (the intervals cover variance, not bias): nonlinear coverage 0.83
at leaf 5 (6 replicates), 0.88 at 3 and 0.90 at 2 (20 replicates), linear 0.87 at 3 and 0.88 at
2, while the null CATE SD is 0.15 (4 replicates), 0.17 and 0.19; PEHE rises slightly below 3
(nonlinear 0.313 at 3, 0.321 at 2). A cross-validated R-loss over clusters (grf's
``tune.parameters`` criterion, 5 cluster folds, 6 trials per scenario) does not separate 3 from
5: loss at 3 minus loss at 5 was +0.0015 (SE 0.0008) under the null, -0.0022 (0.0013) on
nonlinear, -0.0008 (0.0011) on linear, -0.0001 (0.0019) on cluster, so by grf's own rule tuning
would not override the default; leaf 2 is worse under the null (+0.0047, SE 0.0012). Leaf 3 is
the smallest leaf the R-loss does not reject, and the one whose coverage meets the battery bounds.

Intervals: cluster half-sampling
--------------------------------
econml's own "little bags" variance (``subsample = "row"``) treats individuals as independent and is
too narrow in a CRT. Default: the **half-sample variance** over clusters,
the scheme grf uses when it is given ``clusters`` (grf draws half of the clusters for each group
of trees and estimates ``Var(tau_hat)`` by the variance of the half-sample estimates). Here
``n_half_samples`` times a half of the treated and a half of the control clusters is drawn without
replacement and step 3 is refitted on it (``half_sample_trees`` trees), giving ``tau_s(x)``. As
in grf, a refit tree draws as many clusters as a tree of the main forest (``max_samples`` of the
trial is ``2 * max_samples`` of the half-sample), so main and refit forests average the same kernel.

* Odd arms. For an arm of ``M`` clusters the half-sample keeps ``r`` and leaves out ``d = M - r``.
  The variance of a half-sample mean of a cluster-level quantity is ``(d / r) S^2 / M`` against the
  full-sample ``S^2 / M``, so it is unbiased only when ``r = d``. With ``M`` odd the kept count is
  drawn as ``(M - 1)/2`` with probability ``(M - 1)/(2M)`` and ``(M + 1)/2`` otherwise, which makes
  ``E[d / r] = 1`` in every arm: the half-sample variance stays an unbiased estimator of the
  variance of the (linear part of the) full-data estimator whatever the parity of the arms, with
  the factor 1 of grf's half-sampling. (A single factor ``(M - d)/d`` cannot be right when the two
  arms have different parities.)
* ``Y.hat`` is not refitted in a half-sample: the refits use the cross-fitted full-data ``Y.hat``
  of their rows, as grf keeps ``Y.hat`` fixed in its variance. With the known propensity ``W~`` is
  independent of ``X``, so an error in ``Y.hat`` moves ``tau_hat`` only at second order
  (Neyman orthogonality); refitting it would add cost, not first-order variance.
* Monte Carlo noise. A refit forest of ``T`` trees adds its own noise to ``tau_s``. Each refit is
  split into two forests of ``T/2`` trees (``tau_s1``, ``tau_s2``); ``mean_s (tau_s1 - tau_s2)^2 / 4``
  estimates that noise and is subtracted from the between-refit variance, with grf's
  objective-Bayes correction keeping the result positive (econml applies the same to its little
  bags). The width therefore does not depend on ``half_sample_trees`` beyond Monte Carlo error,
  so the refit forests can be small; the main forest's own noise (``n_estimators`` trees) is added
  back by the same estimate scaled by ``half_sample_trees / n_estimators``.
* ``Var(tau_hat(x)) = [debiased Var_s tau_s(x)] + [main-forest noise]``; the interval is
  ``tau_hat +- t_{B-1} * sqrt(Var)`` with ``B = n_half_samples`` (the variance is estimated from B
  refits, hence the t quantile). The ATE interval (``info["ate_interval"]``) is the same for the
  row averages of ``tau_s``.

Why not the cluster bootstrap: a bootstrap sample repeats clusters, so copies of one cluster land
on both sides of the honest split, which biases the refits (on a 10-cluster trial the full-data
CATE fell outside the bootstrap percentile interval for 30% of rows). ``n_half_samples=0`` (with
``subsample = "row"``) returns econml's own (not cluster-robust) intervals instead;
``info["interval"]`` says which was used.

R original: ``grf::causal_forest(X, Y, W, W.hat = 0.5, clusters = cluster, num.trees = 2000,
sample.fraction = 0.5, honesty = TRUE, min.node.size = 5)``. Differences:

* splitting: econml's criterion (``"mse"``) and balance constraint (each child keeps 5% of the
  node) instead of grf's gradient criterion with ``alpha = 0.05``; leaf size as econml (above):
  grf requires ``min.node.size`` treated *and* control rows in each child, which in a CRT
  (treatment constant within cluster) gives much larger leaves;
* cluster subsampling is stratified by arm (grf draws clusters without regard to arm), so every
  tree and both honest halves hold treated and control clusters; all rows of a drawn cluster are
  used (grf's default ``equalize.cluster.weights = FALSE``);
* ``Y.hat`` by K-fold cross-fitting over clusters with a scikit-learn random forest (grf uses
  out-of-bag predictions of its regression forest);
* ``W.hat`` is the share of treated clusters rather than the spec's constant 0.5: the same in a
  1:1 trial, and correct for any other allocation;
* the point estimate is one forest on all clusters and the variance comes from separate
  half-sample forests (grf: one forest whose tree groups are grown on cluster half-samples).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfc
from scipy.stats import t as student_t

from clusterhte.data.trial import TrialData, propensity
from clusterhte.folds import cluster_folds, cluster_strata, n_folds
from clusterhte.methods.base import CateResult, Estimator, MethodError
from clusterhte.methods.bootstrap import n_workers, ordered_draws, parallel_map
from clusterhte.methods.em_trees import check_crt, check_nonnegative_int, check_positive, seed_streams

__all__ = ["CausalForest", "cluster_folds", "cluster_half_sample", "half_sample_sizes"]


def half_sample_sizes(M: int, rng: np.random.Generator) -> int:
    """Clusters to keep from an arm of ``M``: ``M/2`` if even; if odd ``(M - 1)/2`` with probability
    ``(M - 1)/(2M)``, else ``(M + 1)/2``, so that ``E[(M - r)/r] = 1`` (unbiased half-sample variance)."""
    M = int(M)
    if M < 2:
        raise ValueError(f"a half-sample needs at least 2 clusters per arm, got {M}")
    if M % 2 == 0:
        return M // 2
    return (M - 1) // 2 if rng.random() < (M - 1) / (2 * M) else (M + 1) // 2


def cluster_half_sample(train: TrialData, rng: np.random.Generator) -> np.ndarray:
    """Row mask of a half-sample of clusters: in each arm (cluster stratum of
    :func:`clusterhte.folds.cluster_strata`) ``half_sample_sizes(M)`` of its ``M`` clusters, drawn
    without replacement."""
    codes = train.cluster_codes
    strata = cluster_strata(codes, train.treatment)
    keep = np.zeros(strata.size, dtype=bool)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        keep[rng.choice(members, size=half_sample_sizes(members.size, rng), replace=False)] = True
    return keep[codes]


def cluster_tree_draws(strata: np.ndarray, n_trees: int, fraction: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Clusters of each tree of a cluster-subsampled honest forest (grf with ``clusters``).

    ``strata`` is the arm of each cluster (:func:`clusterhte.folds.cluster_strata`). For every tree
    and every arm of ``M`` clusters, ``r = min(max(floor(fraction * M), 2), M)`` clusters are drawn
    without replacement (grf: ``sample.fraction`` of the clusters), and of those ``ceil(r / 2)`` grow
    the tree (choose the splits) and the other ``floor(r / 2)`` populate its leaves (grf's honesty
    split of the drawn clusters, ``honesty.fraction = 0.5``). Returns two ``(n_trees, J)`` boolean
    masks, ``grow`` and ``estimate``; they are disjoint and each holds at least one cluster of each arm.
    """
    strata = np.asarray(strata)
    T, J = int(n_trees), strata.size
    grow = np.zeros((T, J), dtype=bool)
    estimate = np.zeros((T, J), dtype=bool)
    keys = rng.random((T, J))
    for s in np.unique(strata):                       # the two arms (not a loop over clusters)
        cols = np.flatnonzero(strata == s)
        M = cols.size
        if M < 2:
            raise ValueError(f"an honest cluster tree needs at least 2 clusters per arm, got {M}")
        r = int(min(max(np.floor(fraction * M + 1e-9), 2), M))
        g = -(-r // 2)
        rank = np.argsort(np.argsort(keys[:, cols], axis=1), axis=1)   # random order within the arm
        grow[:, cols] = rank < g
        estimate[:, cols] = (rank >= g) & (rank < r)
    return grow, estimate


class ClusterHonestForest:
    """Causal forest whose trees subsample whole clusters and split them for honesty (grf's
    sampling with ``clusters``), grown with econml's GRF tree builder and splitting criterion.

    Solves the same local moment equation as ``econml.grf.CausalForest`` (``fit_intercept=True``,
    criterion ``"mse"``): ``E[(y - tau(x) w - beta(x)) (w; 1) | x] = 0``. Each tree gets the rows
    of the clusters of :func:`cluster_tree_draws`: the splits are chosen on the ``grow`` clusters
    and the leaf moments are computed on the ``estimate`` clusters only. Prediction averages the
    leaf moments over trees and solves the 2 x 2 system, as econml and grf do.

    ``min_samples_leaf`` holds on both honest halves; a node of ``2 * min_samples_leaf`` rows of
    the growing clusters is split; each child keeps at least ``0.5 - min_balancedness_tol`` of the
    node (econml's balance rule). ``fraction`` is the share of each arm's clusters a tree draws.
    """

    def __init__(self, n_estimators: int, min_samples_leaf: int = 5, fraction: float = 0.5,
                 min_balancedness_tol: float = 0.45, n_jobs: int = 1, random_state: int = 0):
        self.n_jobs = int(n_jobs)
        self.n_estimators = int(n_estimators)
        self.min_samples_leaf = int(min_samples_leaf)
        self.fraction = float(fraction)
        self.min_balancedness_tol = float(min_balancedness_tol)
        self.random_state = random_state

    def fit(self, X: np.ndarray, w: np.ndarray, y: np.ndarray, codes: np.ndarray, strata: np.ndarray):
        from econml.grf._base_grftree import CRITERIA_GRF
        from econml.tree._splitter import BestSplitter
        from econml.tree._tree import DOUBLE, DTYPE, DepthFirstTreeBuilder, Tree

        X = np.ascontiguousarray(X, dtype=DTYPE)
        n, p = X.shape
        self.n_features_ = p
        design = np.column_stack([w, np.ones(n)])
        moments = np.column_stack([y, y[:, None] * design,
                                   (design[:, :, None] * design[:, None, :]).reshape(n, 4)])
        moments = np.ascontiguousarray(moments, dtype=DOUBLE)
        rng = np.random.default_rng(self.random_state)
        grow, estimate = cluster_tree_draws(strata, self.n_estimators, self.fraction, rng)
        seeds = rng.integers(np.iinfo(np.int32).max, size=(self.n_estimators, 3))
        msl = self.min_samples_leaf
        criterion = CRITERIA_GRF["mse"]

        def grow_tree(t: int):
            rows_grow = np.flatnonzero(grow[t][codes]).astype(np.intp)
            rows_est = np.flatnonzero(estimate[t][codes]).astype(np.intp)
            splitter = BestSplitter(criterion(2, 1, p, 1, n, rows_grow.size, int(seeds[t, 0])),
                                    criterion(2, 1, p, 1, n, rows_est.size, int(seeds[t, 1])),
                                    p, msl, 0.0, self.min_balancedness_tol, True, -1.0, False,
                                    int(seeds[t, 2]))
            tree = Tree(p, 2, 1, store_jac=True)
            DepthFirstTreeBuilder(splitter, 2 * msl, msl, 0.0, np.iinfo(np.int32).max, 0.0).build(
                tree, X, moments, rows_grow, rows_est, sample_weight=None, store_jac=True)
            return tree

        # econml's builder releases the GIL: threads, as econml does; each thread grows one
        # contiguous block of trees (no per-tree dispatch), trees kept in order
        blocks = np.array_split(np.arange(self.n_estimators), n_workers(self.n_jobs, self.n_estimators))
        self.estimators_ = [tree for block in parallel_map(lambda b: [grow_tree(t) for t in b], blocks, self.n_jobs)
                            for tree in block]
        return self

    def predict_alpha_and_jac(self, X: np.ndarray, slice=None) -> tuple[np.ndarray, np.ndarray]:
        """Tree averages of the leaf moments ``alpha = mean(y (w; 1))`` and ``jac = mean((w; 1)(w; 1)')``."""
        from econml.tree._tree import DTYPE

        X = np.ascontiguousarray(X, dtype=DTYPE)
        if X.ndim != 2 or X.shape[1] != self.n_features_:
            raise ValueError(f"expected {self.n_features_} covariates, got shape {X.shape}")
        idx = range(len(self.estimators_)) if slice is None else slice
        alpha = np.zeros((X.shape[0], 2))
        jac = np.zeros((X.shape[0], 4))
        for i in idx:
            a, j = self.estimators_[i].predict_precond_and_jac(X)
            alpha += a
            jac += j
        k = len(idx)
        return alpha / k, (jac / k).reshape(-1, 2, 2)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return _tau(*self.predict_alpha_and_jac(X))


def _tau(alpha: np.ndarray, jac: np.ndarray) -> np.ndarray:
    """First component of the local solution ``jac^-1 alpha`` (econml's point estimate)."""
    return np.einsum("ijk,ik->ij", np.linalg.pinv(jac), alpha)[:, 0]


def _split_predict(forest, Xt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CATE of the whole forest and of its two halves of trees (first / second half)."""
    T = len(forest.estimators_)
    h = T // 2
    a1, j1 = forest.predict_alpha_and_jac(Xt, slice=np.arange(h))
    a2, j2 = forest.predict_alpha_and_jac(Xt, slice=np.arange(h, 2 * h))
    return _tau((a1 + a2) / 2, (j1 + j2) / 2), _tau(a1, j1), _tau(a2, j2)


def debiased_variance(between: np.ndarray, noise: np.ndarray, n_groups: int) -> np.ndarray:
    """``between - noise`` made positive by grf's objective-Bayes correction (as econml's little
    bags): with ``se = max(between, noise) sqrt(2 / n_groups)`` and ``z = (between - noise)/se``,
    the variance is ``(between - noise) + se * phi(z) / Phi(z)``."""
    naive = between - noise
    se = np.maximum(between, noise) * np.sqrt(2.0 / n_groups)
    z = naive / np.clip(se, 1e-300, np.inf)
    ratio = np.exp(-z * z / 2) / np.sqrt(2 * np.pi) / np.clip(0.5 * erfc(-z / np.sqrt(2.0)), 1e-300, None)
    return naive + se * ratio


class CausalForest(Estimator):
    """CF: honest causal forest with W.hat = the share of treated clusters, cross-fitted Y.hat,
    cluster half-sampling intervals.

    Paper label "CF"; R original ``grf::causal_forest`` (see the module docstring for the
    algorithm, the interval and every difference).

    Hyperparameters
    ---------------
    n_estimators, min_samples_leaf, max_samples, honest : causal forest (grf ``num.trees``,
        ``min.node.size`` (econml's meaning, see the module docstring), ``sample.fraction`` (of
        the clusters of each arm with ``subsample = "cluster"``, of the rows otherwise),
        ``honesty``). ``n_estimators`` must be a multiple of 4 (econml's little bags) when
        ``n_half_samples = 0``.
    subsample : ``"cluster"`` (default; grf's sampling with ``clusters``: trees draw whole clusters
        and split them for honesty) or ``"row"`` (``econml.grf.CausalForest``, the former
        behaviour: rows, which invents heterogeneity from cluster noise; needed for
        ``honest = False`` and for econml's intervals).
    yhat_trees, yhat_min_samples_leaf, yhat_folds : regression forest for ``Y.hat`` and the
        largest number of cluster folds used to cross-fit it (capped at the clusters per arm).
    n_half_samples : cluster half-samples for the variance (>= 2). 0 = no refits: point estimates
        only, with no interval (``subsample = "cluster"``; what the validation's cross-fits use), or
        econml's own intervals (``subsample = "row"``; individual-level, not cluster-robust).
    half_sample_trees : trees of each half-sample forest (even, >= 2). Its Monte Carlo noise is
        estimated and removed, so it sets the cost, not the width.
    n_threads : threads: the ``Y.hat`` and main forests grow their trees on ``n_threads`` threads;
        the half-sample forests are grown ``n_threads`` at a time, one thread each. The estimates
        are the same for every thread count.
    """

    name = "cf"
    label = "CF"
    designs = ("crt",)
    has_intervals = True
    library = "econml"

    def __init__(self, n_estimators: int = 2000, min_samples_leaf: int = 3, max_samples: float = 0.5,
                 honest: bool = True, yhat_trees: int = 500, yhat_min_samples_leaf: int = 5,
                 yhat_folds: int = 5, n_half_samples: int = 50, half_sample_trees: int = 100,
                 subsample: str = "cluster", n_threads: int = 1, random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    # ------------------------------------------------------------------ checks
    def _check(self, train: TrialData) -> np.ndarray:
        check_positive(self, n_estimators=self.n_estimators, half_sample_trees=self.half_sample_trees,
                       min_samples_leaf=self.min_samples_leaf, yhat_trees=self.yhat_trees,
                       yhat_min_samples_leaf=self.yhat_min_samples_leaf, n_threads=self.n_threads)
        check_nonnegative_int(self, n_half_samples=self.n_half_samples, yhat_folds=self.yhat_folds)
        if self.n_half_samples == 1:
            raise MethodError("method 'cf': hyperparameter 'n_half_samples' must be 0 or >= 2, got 1")
        if not 0 < self.max_samples <= 0.5:
            raise MethodError(f"method 'cf': hyperparameter 'max_samples' must be in (0, 0.5] "
                              f"(half-sampling of the honest forest), got {self.max_samples!r}")
        if self.n_half_samples == 0 and self.n_estimators % 4 and self.subsample == "row":
            raise MethodError(f"method 'cf': hyperparameter 'n_estimators' must be a multiple of 4 "
                              f"when n_half_samples = 0 (econml's little-bags intervals), got {self.n_estimators!r}")
        if self.n_half_samples and (self.half_sample_trees < 2 or self.half_sample_trees % 2):
            raise MethodError(f"method 'cf': hyperparameter 'half_sample_trees' must be even and >= 2 "
                              f"(each refit is split in two to measure its Monte Carlo noise), "
                              f"got {self.half_sample_trees!r}")
        if self.subsample not in ("cluster", "row"):
            raise MethodError(f"method 'cf': hyperparameter 'subsample' must be 'cluster' or 'row', "
                              f"got {self.subsample!r}")
        if self.subsample == "cluster" and not self.honest:
            raise MethodError("method 'cf': subsample = 'cluster' grows honest trees (grf's honesty by "
                              "cluster); use subsample = 'row' for honest = false")
        if self.yhat_folds < 2:
            raise MethodError(f"method 'cf': hyperparameter 'yhat_folds' must be >= 2, got {self.yhat_folds!r}")
        if not train.covariates:
            raise MethodError("method 'cf': the trial has no covariates to split on")
        strata = cluster_strata(train.cluster_codes, train.treatment)
        per_arm = np.bincount(strata, minlength=2)[:2]
        if per_arm.min() < 2:
            raise MethodError(f"method 'cf': {train.name} has {per_arm[1]} treated and {per_arm[0]} control "
                              f"cluster(s); cross-fitting by cluster needs at least 2 per arm")
        if self.subsample == "cluster" and self.n_half_samples and per_arm.min() < 4:
            raise MethodError(f"method 'cf': {train.name} has {per_arm[1]} treated and {per_arm[0]} control "
                              f"clusters; the half-sample intervals need at least 4 per arm (a half-sample "
                              f"keeps about half of each arm's clusters, and an honest cluster tree needs 2 "
                              f"of them per arm). Use lmm or gamm for a trial this small")
        return strata

    # ------------------------------------------------------------------ steps 1-3
    def _yhat(self, X: np.ndarray, y: np.ndarray, codes: np.ndarray, seed: int,
              strata: np.ndarray | None = None) -> np.ndarray:
        """Cross-fitted ``Y.hat`` over arm-stratified cluster folds (fold count capped at the
        clusters per arm). The forests are scikit-learn's ``RandomForestRegressor`` (default
        ``max_features = 1.0``), grown by :class:`~clusterhte.methods.em_trees.RandomForest` (the same
        trees bit for bit, without sklearn's per-tree overhead)."""
        from clusterhte.methods.em_trees import RandomForest

        J = int(codes.max()) + 1
        k = n_folds(J, int(self.yhat_folds), strata)
        folds = cluster_folds(codes, k, np.random.default_rng(seed), strata)
        yhat = np.empty_like(y)
        for f in range(k):
            held = folds == f
            rf = RandomForest(n_estimators=int(self.yhat_trees), min_samples_leaf=int(self.yhat_min_samples_leaf),
                              max_features=1.0, n_jobs=int(self.n_threads), random_state=seed)
            yhat[held] = rf.fit(X[~held], y[~held]).predict(X[held])
        return yhat

    def _forest(self, X, A, ytilde, seed: int, n_trees: int, inference: bool = False,
                fraction: float | None = None, codes: np.ndarray | None = None, n_jobs: int | None = None):
        """Step 3 on the rows given: the cluster-honest forest, or econml's row-subsampled one
        (trees grown by ``n_jobs`` threads, default ``n_threads``; the trees do not depend on it)."""
        fraction = float(fraction or self.max_samples)
        n_jobs = int(self.n_threads if n_jobs is None else n_jobs)
        if self.subsample == "cluster":
            _, codes = np.unique(codes, return_inverse=True)          # clusters present, 0..J'-1
            strata = cluster_strata(codes, A)
            forest = ClusterHonestForest(int(n_trees), int(self.min_samples_leaf), fraction,
                                         n_jobs=n_jobs, random_state=seed)
            return forest.fit(X, A - self.w_hat_, ytilde, codes, strata)
        from econml.grf import CausalForest as _EconCF

        forest = _EconCF(n_estimators=int(n_trees), min_samples_leaf=int(self.min_samples_leaf),
                         max_samples=fraction, honest=bool(self.honest),
                         inference=inference, n_jobs=n_jobs, random_state=seed)
        return forest.fit(X, A - self.w_hat_, ytilde)

    # ------------------------------------------------------------------ interface
    def _fit(self, train: TrialData) -> None:
        check_crt(self, train)
        strata = self._check(train)
        seed, rng, seeds = seed_streams(self.random_state)
        self.covariates_ = train.covariates
        X, y, A = train.X(), train.outcome, train.treatment
        codes = train.cluster_codes
        # W.hat: the share of treated clusters, held fixed in the half-sample refits as grf holds it
        self.w_hat_ = float(propensity(train)[0])
        self.yhat_ = self._yhat(X, y, train.cluster_codes, seed, strata)
        ytilde = y - self.yhat_
        self.forest_ = self._forest(X, A, ytilde, seed, int(self.n_estimators),
                                    inference=int(self.n_half_samples) == 0 and self.subsample == "row",
                                    codes=codes)
        # the half-sample refits, n_threads at a time with one thread each; refit k gets the k-th
        # half-sample and seed whatever the thread count (ordered_draws), so the same forests
        draw = ordered_draws(lambda: (cluster_half_sample(train, rng), int(seeds.integers(2 ** 31 - 1))))

        def refit(d):
            rows, s = d
            return self._forest(X[rows], A[rows], ytilde[rows], s, int(self.half_sample_trees),
                                fraction=2 * float(self.max_samples), codes=codes[rows], n_jobs=1)

        self.half_ = draw.collect(parallel_map(lambda _: draw.run(refit), range(int(self.n_half_samples)),
                                               int(self.n_threads)))

    def _predict(self, test: TrialData) -> CateResult:
        missing = [c for c in self.covariates_ if c not in test.frame.columns]
        if missing:
            raise MethodError(f"method 'cf': prediction table lacks covariate(s) {missing}")
        Xt = test.X(self.covariates_)
        if not self.half_ and self.subsample == "cluster":
            point = self.forest_.predict(Xt).ravel()
            nan = np.full(point.shape, np.nan)
            return CateResult(point=point, lower=nan, upper=nan.copy(),
                              info={"interval": "none (n_half_samples = 0: point estimates only)"})
        if not self.half_:
            point, lo, hi = self.forest_.predict(Xt, interval=True, alpha=0.05)
            return CateResult(point=point.ravel(), lower=lo.ravel(), upper=hi.ravel(),
                              info={"interval": "econml little bags (not cluster-robust)"})
        point = self.forest_.predict(Xt).ravel()
        B = len(self.half_)
        parts = parallel_map(lambda f: _split_predict(f, Xt), self.half_, int(self.n_threads))
        T = np.column_stack([p[0] for p in parts])                  # (rows, B)
        D = np.column_stack([p[1] - p[2] for p in parts])           # half-forest differences
        scale = float(self.half_sample_trees) / float(self.n_estimators)

        def variance(T, D):
            noise = np.mean(D * D, axis=-1) / 4
            return debiased_variance(T.var(axis=-1, ddof=1), noise, B) + scale * noise

        q = float(student_t.ppf(0.975, B - 1))
        se = np.sqrt(variance(T, D))
        ate = float(point.mean())
        ate_se = float(np.sqrt(variance(T.mean(axis=0), D.mean(axis=0))))
        info = {"interval": f"cluster half-sampling, {B} half-samples, t({B - 1}) quantile",
                "ate_interval": (ate - q * ate_se, ate + q * ate_se), "se": se}
        return CateResult(point=point, lower=point - q * se, upper=point + q * se, info=info)
