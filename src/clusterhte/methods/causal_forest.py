"""CF: causal forest with known propensity 0.5 and cluster half-sampling intervals (spec §3.5).

Estimand: ``tau(x, v) = E[Y(1) - Y(0) | X = x, V = v]`` in a cluster-randomized trial. A causal
forest estimates it directly (no random effect is modelled; clustering enters through the
cross-fitting folds and the intervals).

Algorithm (as ``grf::causal_forest(X, Y, W, W.hat = 0.5, Y.hat = <estimated>)``):

1. ``Y.hat``: cross-fitted regression-forest estimate of ``E[Y | X, V]``; folds are made of whole
   clusters (``yhat_folds``), each held-out fold predicted by a forest fitted on the others.
2. Centre: ``W~ = A - 0.5`` (the propensity is known in a 1:1 CRT) and ``Y~ = Y - Y.hat``.
3. Honest causal forest on ``(X, V)`` with ``econml.grf.CausalForest`` solving the local moment
   equation ``E[(Y~ - tau(x) W~ - beta(x)) (W~; 1) | x] = 0``; ``tau(x)`` is the CATE.

Intervals. econml's forest cannot subsample *clusters*, so its own "little bags" variance treats
individuals as independent and is too narrow in a CRT. Default: a **cluster half-sampling
(delete-half jackknife) variance**. ``n_half_samples`` times, half of the treated and half of the
control clusters are drawn without replacement, steps 1-3 are refitted on them and the CATEs
``tau_s`` of the prediction rows are kept; with ``d`` the number of clusters left out of ``M``,

    Var(tau_hat) = (M - d) / d * mean_s (tau_s - mean(tau_s))^2      (= the half-sample variance)

and the interval is ``tau_hat +- z * sqrt(Var)`` (Wald), the ATE interval likewise from the row
averages of ``tau_s`` (``info["ate_interval"]``). Why not the cluster bootstrap: a bootstrap
sample repeats clusters, so copies of one cluster land on both sides of the honest split and of
the ``Y.hat`` cross-fitting folds, which breaks honesty and biases the refits (on a 10-cluster
trial the full-data CATE fell outside the bootstrap percentile interval for 30% of rows).
Half-samples contain every cluster at most once, keep the 1:1 allocation, and are the
subsampling scheme grf itself uses (grf draws half-samples of clusters for its variance); the
delete-``d`` jackknife with ``d`` proportional to ``M`` is consistent for non-smooth statistics
(Shao & Wu 1989). Each half-sample forest has ``half_sample_trees`` trees; its Monte Carlo noise
adds to the variance (conservative). ``n_half_samples=0`` returns econml's own (not
cluster-robust) intervals instead; ``info["interval"]`` says which was used.

R original: ``grf::causal_forest(X, Y, W, W.hat = 0.5, clusters = cluster, num.trees = 2000,
sample.fraction = 0.5, honesty = TRUE, min.node.size = 5)``. Differences: econml's splitting rule
and balance constraint (``min_balancedness_tol = 0.45``) rather than grf's; no cluster
subsampling inside the forest; ``Y.hat`` by K-fold cross-fitting over clusters with a
scikit-learn random forest (grf uses out-of-bag predictions of its regression forest); intervals
by refitting on cluster half-samples (grf: half-samples of clusters inside one forest).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from clusterhte.data.trial import TrialData
from clusterhte.methods.base import CateResult, Estimator, MethodError
from clusterhte.methods.em_trees import check_crt, check_nonnegative_int, check_positive, seed_streams


def cluster_folds(codes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold label (0..k-1) per row; whole clusters in each fold, cluster counts balanced at random."""
    J = codes.max() + 1
    fold_of_cluster = np.empty(J, dtype=int)
    fold_of_cluster[rng.permutation(J)] = np.arange(J) % k
    return fold_of_cluster[codes]


def cluster_half_sample(train: TrialData, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Row mask of a half-sample of clusters drawn without replacement within arm, and ``d``, the
    number of clusters left out. Arms are the clusters' treated share (CRT: 0 or 1)."""
    codes = train.cluster_codes
    J = codes.max() + 1
    arm = np.bincount(codes, weights=train.treatment, minlength=J) > 0
    keep = np.zeros(J, dtype=bool)
    for a in (False, True):
        members = np.flatnonzero(arm == a)
        keep[rng.choice(members, size=len(members) // 2, replace=False)] = True
    return keep[codes], int(J - keep.sum())


class _CFFit:
    """One fitted causal forest (steps 1-3)."""

    def __init__(self, forest, yhat: np.ndarray):
        self.forest, self.yhat = forest, yhat

    def cate(self, Xt: np.ndarray) -> np.ndarray:
        return self.forest.predict(Xt).ravel()


class CausalForest(Estimator):
    """CF: honest causal forest with W.hat = 0.5, cross-fitted Y.hat, cluster half-sampling intervals.

    Paper label "CF"; R original ``grf::causal_forest`` (see the module docstring for the
    algorithm, the interval and every difference).

    Hyperparameters
    ---------------
    n_estimators, min_samples_leaf, max_samples, honest : causal forest (grf ``num.trees``,
        ``min.node.size``, ``sample.fraction``, ``honesty``). ``n_estimators`` must be a multiple
        of 4 (econml's little bags) when ``n_half_samples = 0``.
    yhat_trees, yhat_min_samples_leaf, yhat_folds : regression forest for ``Y.hat`` and the number
        of cluster folds used to cross-fit it.
    n_half_samples : cluster half-samples for the variance; 0 = econml's own intervals
        (individual-level, not cluster-robust).
    half_sample_trees : trees of each half-sample forest (the refits are kept for ``predict``; a
        2000-tree econml forest on 600 rows takes about 22 MB).
    n_threads : threads for econml / scikit-learn.
    """

    name = "cf"
    label = "CF"
    designs = ("crt",)
    has_intervals = True
    library = "econml"

    def __init__(self, n_estimators: int = 2000, min_samples_leaf: int = 5, max_samples: float = 0.5,
                 honest: bool = True, yhat_trees: int = 500, yhat_min_samples_leaf: int = 5,
                 yhat_folds: int = 5, n_half_samples: int = 50, half_sample_trees: int = 500,
                 n_threads: int = 1, random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    # ------------------------------------------------------------------ checks
    def _check(self, train: TrialData) -> None:
        check_positive(self, n_estimators=self.n_estimators, half_sample_trees=self.half_sample_trees,
                       min_samples_leaf=self.min_samples_leaf, yhat_trees=self.yhat_trees,
                       yhat_min_samples_leaf=self.yhat_min_samples_leaf, n_threads=self.n_threads)
        check_nonnegative_int(self, n_half_samples=self.n_half_samples, yhat_folds=self.yhat_folds)
        if self.n_half_samples == 1:
            raise MethodError("method 'cf': hyperparameter 'n_half_samples' must be 0 or >= 2, got 1")
        if not 0 < self.max_samples <= 0.5:
            raise MethodError(f"method 'cf': hyperparameter 'max_samples' must be in (0, 0.5] "
                              f"(half-sampling of the honest forest), got {self.max_samples!r}")
        if self.n_half_samples == 0 and self.n_estimators % 4:
            raise MethodError(f"method 'cf': hyperparameter 'n_estimators' must be a multiple of 4 "
                              f"when n_half_samples = 0 (econml's little-bags intervals), got {self.n_estimators!r}")
        J = train.cluster_codes.max() + 1
        smallest = J if self.n_half_samples == 0 else J // 2
        if not 2 <= self.yhat_folds <= smallest:
            raise MethodError(f"method 'cf': hyperparameter 'yhat_folds' must be between 2 and {smallest} "
                              f"(the clusters of a {'trial' if self.n_half_samples == 0 else 'half-sample'}), "
                              f"got {self.yhat_folds!r}")
        if self.n_half_samples and J < 8:
            raise MethodError(f"method 'cf': half-sampling needs at least 8 clusters (4 per arm), "
                              f"{train.name} has {J}; set n_half_samples = 0")
        if not train.covariates:
            raise MethodError("method 'cf': the trial has no covariates to split on")

    # ------------------------------------------------------------------ steps 1-3
    def _yhat(self, X: np.ndarray, y: np.ndarray, codes: np.ndarray, seed: int) -> np.ndarray:
        from sklearn.ensemble import RandomForestRegressor

        folds = cluster_folds(codes, int(self.yhat_folds), np.random.default_rng(seed))
        yhat = np.empty_like(y)
        for k in range(int(self.yhat_folds)):
            held = folds == k
            rf = RandomForestRegressor(n_estimators=int(self.yhat_trees),
                                       min_samples_leaf=int(self.yhat_min_samples_leaf),
                                       n_jobs=int(self.n_threads), random_state=seed)
            yhat[held] = rf.fit(X[~held], y[~held]).predict(X[held])
        return yhat

    def _fit_one(self, train: TrialData, seed: int, inference: bool = False,
                 n_trees: int | None = None) -> _CFFit:
        from econml.grf import CausalForest as _EconCF

        X, y = train.X(), train.outcome
        yhat = self._yhat(X, y, train.cluster_codes, seed)
        forest = _EconCF(n_estimators=int(n_trees or self.n_estimators), min_samples_leaf=int(self.min_samples_leaf),
                         max_samples=float(self.max_samples), honest=bool(self.honest),
                         inference=inference, n_jobs=int(self.n_threads), random_state=seed)
        forest.fit(X, train.treatment - 0.5, y - yhat)
        return _CFFit(forest, yhat)

    # ------------------------------------------------------------------ interface
    def _fit(self, train: TrialData) -> None:
        check_crt(self, train)
        self._check(train)
        seed, rng, seeds = seed_streams(self.random_state)
        self.covariates_ = train.covariates
        self.fit_ = self._fit_one(train, seed, inference=int(self.n_half_samples) == 0)
        self.half_ = []
        for _ in range(int(self.n_half_samples)):
            rows, d = cluster_half_sample(train, rng)
            self.half_.append(self._fit_one(train.subset(rows), int(seeds.integers(2 ** 31 - 1)),
                                            n_trees=int(self.half_sample_trees)))
        self.jackknife_factor_ = (train.cluster_codes.max() + 1 - d) / d if self.half_ else np.nan

    def _predict(self, test: TrialData) -> CateResult:
        missing = [c for c in self.covariates_ if c not in test.frame.columns]
        if missing:
            raise MethodError(f"method 'cf': prediction table lacks covariate(s) {missing}")
        Xt = test.X(self.covariates_)
        if not self.half_:
            point, lo, hi = self.fit_.forest.predict(Xt, interval=True, alpha=0.05)
            return CateResult(point=point.ravel(), lower=lo.ravel(), upper=hi.ravel(),
                              info={"interval": "econml little bags (not cluster-robust)"})
        point = self.fit_.cate(Xt)
        T = np.column_stack([f.cate(Xt) for f in self.half_])
        z = norm.ppf(0.975)
        se = np.sqrt(self.jackknife_factor_ * T.var(axis=1))
        ate_se = np.sqrt(self.jackknife_factor_ * T.mean(axis=0).var())
        ate = float(point.mean())
        info = {"interval": f"cluster half-sampling, {T.shape[1]} half-samples",
                "ate_interval": (ate - z * ate_se, ate + z * ate_se), "se": se}
        return CateResult(point=point, lower=point - z * se, upper=point + z * se, info=info)
