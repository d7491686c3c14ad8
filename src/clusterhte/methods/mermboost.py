"""mermboost: component-wise L2 boosting of an additive model with a corrected cluster random intercept.

Paper label **mermboost**. R original: CRAN ``mermboost`` 0.1.1 (Knieper, Hothorn, Bergherr &
Griesbach, Stat Comput 2025), itself built on ``mboost``. The model fitted is (spec §3.9)::

    y ~ bols(A) + sum_k [bbs(x_k) + bbs(x_k, by = A)] + sum_l [bols(v_l) + bols(v_l, by = A)] + (1 | cluster)

and the estimand is the population-level CATE with the random intercept set to zero,
``tau(x, v) = f(x, v, A = 1) - f(x, v, A = 0)``.

Algorithm (one boosting iteration, as mermboost's negative-gradient call):

1. refit the random intercept on the current additive predictor ``f`` (R:
   ``lmer(y ~ 1 - 1 + (1 | id), offset = f)``): the variance ratio is re-estimated by maximising the
   one-way random-intercept likelihood of ``r = y - f`` (no fixed effects, so ML = REML), and
   ``b_i = n_i s_b^2 / (n_i s_b^2 + s_e^2) * mean_j r_ij`` (the BLUP);
2. correct the intercepts for cluster-constant columns, ``b~ = (I - P) b``, with ``P`` the
   cluster-level projection on ``[1, cluster-constant columns]``; without it the intercepts absorb
   the (cluster-level) treatment effect;
3. negative gradient ``u = y - f - Z b~``;
4. every base-learner is fitted to ``u`` by penalised least squares; the one with the smallest
   residual sum of squares updates ``f <- f + nu * h``.

``mstop`` is chosen by cluster-grouped K-fold cross-validation of the population-level squared
error on the held-out clusters (R: ``mer_cvrisk``; folds of whole clusters stratified by arm,
:mod:`clusterhte.folds`, at most as many folds as clusters per arm), then multiplied by
``mstop_scale`` (default 3, see below).

Intervals: cluster bootstrap (clusters resampled within arm, :mod:`.bootstrap`), ``point +- t_{B-1}
SD`` of the ``n_bootstrap`` refits' CATEs (``t`` because the SD comes from B refits).

Why ``mstop_scale``. Cross-validation picks the ``mstop`` that predicts ``y`` best; the CATE is a
small part of that error, so the CV-optimal fit shrinks the treatment-by-covariate learners and
its bias is of the order of its standard error: on the battery's linear scenario (40 clusters,
5 replicates, 20 refits, t intervals) the CV-stopped fit (mstop about 180) had a root mean squared
CATE error 1.37 times the bootstrap SD and pointwise coverage 0.84; re-choosing ``mstop`` inside
every refit (``boot_mstop = "oob"``, out-of-bag clusters) did not help (0.83) and cost three times
as much. Running longer removes the bias faster than it adds variance (undersmoothing, the usual
remedy for intervals around a regularised fit): ``mstop_scale`` 2 / 3 gave coverage 0.86 / 0.88
on the linear scenario and 0.885 / 0.90 on the nonlinear one, with root mean squared CATE errors
0.249 / 0.257 against 0.239 at the CV optimum. ``mstop_scale = 1`` is the R behaviour.

Base-learners
-------------
* ``bbs``: cubic P-spline on 20 equally spaced inner knots with a second-order difference penalty,
  ``lambda`` set so that ``df = tr(2S - S'S) = 4`` (mboost defaults); ``by = A`` multiplies the
  basis by the treatment (the learner is then calibrated on that design).
* ``bols``: unpenalised linear learner with an intercept (``bols(v, by = A)`` has columns
  ``A, A v``).

Differences from the R original
-------------------------------
* The random-intercept step is the closed-form one-way likelihood (a 1-d Newton solve, warm-started
  at the previous iteration) rather than a call to ``lmer``; the estimates are the same.
* The projection ``P`` uses ``[1, A, V, A * V, individual covariates constant within every
  cluster]``; mermboost uses the cluster-constant columns of the data (``1, A, V``). The products
  ``A * V`` are added because the model has ``bols(v, by = A)`` learners whose signal is also
  cluster-constant (``correct_interactions = False`` gives the R behaviour).
* Binary (or few-valued, fewer than ``min_unique_smooth`` distinct values) individual covariates
  get ``bols`` learners instead of ``bbs``; cluster covariates get ``bols`` learners (spec §3.9).
* Outside the training range the P-spline basis is extended linearly (:mod:`.splines`).
* ``mstop`` is ``mstop_scale`` times the CV choice (R: the CV choice).
* Bootstrap replicates reuse the full-data ``mstop`` (``boot_mstop = "fixed"``, default) or choose
  their own on their out-of-bag clusters (``"oob"``; mboost's default ``cvrisk`` is also
  bootstrap out-of-bag risk), then scaled by ``mstop_scale``.
* CV folds are stratified by arm so that every training fold keeps both arms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clusterhte.data.trial import TrialData
from clusterhte.methods.base import CateResult, Estimator, MethodError
from clusterhte.folds import cluster_folds, cluster_strata, n_folds
from clusterhte.methods.bootstrap import bootstrap_clusters, bootstrap_result, parallel_map, sample_of_clusters
from clusterhte.methods.splines import BSplineBasis, difference_penalty, lambda_for_df


# --------------------------------------------------------------------------------------------------
# base-learners: precomputed penalised least-squares solvers
# --------------------------------------------------------------------------------------------------
class LearnerSet:
    """A set of base-learners on the same rows, each a design block ``X_j`` with penalty ``lam_j P_j``.

    Precomputes ``(X_j'X_j + lam_j P_j)^{-1}`` and ``X_j'X_j`` once, stacked block-diagonally, so
    fitting every learner to a working response and ranking them by RSS is a few matrix-vector
    products.
    """

    def __init__(self, blocks: list[np.ndarray], lambdas: list[float], penalties: list[np.ndarray | None],
                 names: list[str] | None = None):
        if not blocks:
            raise MethodError("boosting needs at least one base-learner")
        self.names = list(names) if names is not None else [f"learner{j}" for j in range(len(blocks))]
        sizes = np.array([b.shape[1] for b in blocks])
        self.starts = np.concatenate([[0], np.cumsum(sizes)])
        self.X = np.ascontiguousarray(np.column_stack(blocks))
        p = self.X.shape[1]
        self.Sinv = np.zeros((p, p))
        self.G = np.zeros((p, p))
        for j, (B, lam, P) in enumerate(zip(blocks, lambdas, penalties)):
            sl = slice(self.starts[j], self.starts[j + 1])
            G = B.T @ B
            S = G + (lam * P if (P is not None and lam > 0) else 0.0)
            self.Sinv[sl, sl] = np.linalg.pinv(S, hermitian=True)
            self.G[sl, sl] = G
        self.reduce_idx = self.starts[:-1]

    @property
    def n_learners(self) -> int:
        return len(self.starts) - 1

    def best_fit(self, u: np.ndarray) -> tuple[int, np.ndarray, float]:
        """Fit every learner to ``u``; return (index of the smallest-RSS learner, its coefficients, RSS)."""
        Xtu = self.X.T @ u
        c = self.Sinv @ Xtu
        rss = float(u @ u) - 2 * np.add.reduceat(Xtu * c, self.reduce_idx) + np.add.reduceat(c * (self.G @ c), self.reduce_idx)
        j = int(np.argmin(rss))
        return j, c[self.starts[j]:self.starts[j + 1]], float(rss[j])


# --------------------------------------------------------------------------------------------------
# the random-intercept step
# --------------------------------------------------------------------------------------------------
@dataclass
class RandomIntercept:
    """One-way random intercept ``r_ij = b_i + e_ij`` (no fixed effects), refitted every iteration.

    codes : cluster code (0..J-1) per row; H : optional (J, J) projection whose range the corrected
    intercepts are made orthogonal to (``b~ = b - H b``).
    """

    codes: np.ndarray
    H: np.ndarray | None = None
    log_gamma: float = 0.0
    gamma: float = 0.0
    sigma2: float = np.nan
    n_j: np.ndarray = field(init=False)

    def __post_init__(self):
        self.codes = np.asarray(self.codes)
        self.J = int(self.codes.max()) + 1
        self.n_j = np.bincount(self.codes, minlength=self.J).astype(float)
        self.N = float(self.n_j.sum())

    def fit(self, r: np.ndarray) -> np.ndarray:
        """Corrected intercepts (length J) for residuals ``r``; updates ``gamma = s_b^2 / s_e^2``."""
        n = self.n_j
        m = np.bincount(self.codes, weights=r, minlength=self.J) / n
        ssw = max(float(r @ r) - float(n @ (m * m)), 0.0)
        nm2 = n * m * m
        N = self.N
        # derivative at gamma = 0 of g(gamma) = N log Q(gamma) + sum log(1 + n gamma)
        q0 = ssw + nm2.sum()
        if q0 <= 0 or -N * float((n * nm2).sum()) / q0 + n.sum() >= 0:
            self.gamma = 0.0
            self.sigma2 = q0 / N
            return np.zeros(self.J)
        th = self.log_gamma if np.isfinite(self.log_gamma) else 0.0
        lo, hi = -30.0, 30.0
        # products that do not change within the Newton loop, formed once (same values as in the loop)
        nn = n * n
        n_nm2, nn_nm2 = n * nm2, nn * nm2
        for _ in range(60):
            g = np.exp(th)
            w = 1.0 / (1.0 + n * g)
            ww = w * w
            Q = ssw + float(nm2 @ w)
            Q1 = -float(n_nm2 @ ww)
            Q2 = 2.0 * float(nn_nm2 @ (ww * w))
            d1 = N * Q1 / Q + float(n @ w)
            d2 = N * (Q2 / Q - (Q1 / Q) ** 2) - float(nn @ ww)
            t1 = g * d1                      # derivative in theta = log gamma
            t2 = g * d1 + g * g * d2
            if t1 > 0:
                hi = min(hi, th)
            else:
                lo = max(lo, th)
            step = -t1 / t2 if t2 > 0 else -np.sign(t1) * 2.0
            step = min(max(float(step), -2.0), 2.0)          # np.clip(step, -2, 2) on a scalar
            new = th + step
            if not (lo < new < hi):
                new = 0.5 * (lo + hi)
            if abs(new - th) < 1e-9:
                th = new
                break
            th = new
        self.log_gamma = th
        g = np.exp(th)
        w = 1.0 / (1.0 + n * g)
        self.gamma = g
        self.sigma2 = (ssw + float(nm2 @ w)) / N
        b = n * g * w * m
        if self.H is not None:
            b = b - self.H @ b
        return b

    @property
    def tau2(self) -> float:
        return self.gamma * self.sigma2


def cluster_projection(Xcc: np.ndarray) -> np.ndarray:
    """``P = Xcc (Xcc'Xcc)^- Xcc'`` for the cluster-level matrix ``Xcc`` (J rows), via the pseudo-inverse."""
    return Xcc @ np.linalg.pinv(Xcc)


# --------------------------------------------------------------------------------------------------
# the boosting loop
# --------------------------------------------------------------------------------------------------
@dataclass
class BoostFit:
    offset: float
    coef: np.ndarray                 # accumulated coefficients of the stacked design
    selected: np.ndarray             # learner chosen at each iteration
    risk: np.ndarray | None          # held-out sum of squared errors after each iteration
    ri: RandomIntercept | None
    b: np.ndarray | None             # final corrected random intercepts
    path: np.ndarray | None = None   # (mstop, p) coefficients after each iteration (keep_path=True)


def boost(learners: LearnerSet, y: np.ndarray, mstop: int, nu: float = 0.1,
          ri: RandomIntercept | None = None, X_eval: np.ndarray | None = None,
          y_eval: np.ndarray | None = None, keep_path: bool = False) -> BoostFit:
    """Component-wise L2 boosting for ``mstop`` iterations, optionally with a random intercept.

    When ``X_eval``/``y_eval`` are given, the population-level (random effect zero) held-out sum of
    squared errors is recorded after every iteration; ``keep_path`` keeps the coefficients after
    every iteration (``path[m - 1]`` is the fit stopped at ``m``).
    """
    y = np.asarray(y, dtype=float)
    offset = float(y.mean())
    f = np.full(y.shape[0], offset)
    coef = np.zeros(learners.X.shape[1])
    selected = np.empty(mstop, dtype=np.int32)
    track = X_eval is not None
    if track:
        fe = np.full(X_eval.shape[0], offset)
        risk = np.empty(mstop)
    b = None
    path = np.empty((mstop, coef.size)) if keep_path else None
    starts = learners.starts
    for m in range(mstop):
        r = y - f
        if ri is not None:
            b = ri.fit(r)
            u = r - b[ri.codes]
        else:
            u = r
        j, c, _ = learners.best_fit(u)
        sl = slice(starts[j], starts[j + 1])
        step = nu * c
        coef[sl] += step
        f += learners.X[:, sl] @ step
        selected[m] = j
        if track:
            fe += X_eval[:, sl] @ step
            d = y_eval - fe
            risk[m] = float(d @ d)
        if keep_path:
            path[m] = coef
    if ri is not None:
        b = ri.fit(y - f)
    return BoostFit(offset, coef, selected, risk if track else None, ri, b, path)


# --------------------------------------------------------------------------------------------------
# the model specification: which learner for which covariate
# --------------------------------------------------------------------------------------------------
class _Spec:
    """Base-learner layout for a trial, fitted on training rows (knots, lambdas)."""

    def __init__(self, train: TrialData, df: float, n_knots: int, degree: int, diff_order: int,
                 min_unique_smooth: int, interactions: bool):
        self.terms: list[tuple[str, str, str | None, bool]] = [("bols(A)", "bols", None, False)]
        F = train.frame
        for c in train.individual_covariates:
            smooth = np.unique(F[c].to_numpy(dtype=float)).size >= min_unique_smooth
            kind = "bbs" if smooth else "bols"
            self.terms.append((f"{kind}({c})", kind, c, False))
            if interactions:
                self.terms.append((f"{kind}({c}, by = A)", kind, c, True))
        for c in train.cluster_covariates:
            self.terms.append((f"bols({c})", "bols", c, False))
            if interactions:
                self.terms.append((f"bols({c}, by = A)", "bols", c, True))
        self.bases: dict[str, BSplineBasis] = {}
        for _, kind, c, _ in self.terms:
            if kind == "bbs" and c not in self.bases:
                self.bases[c] = BSplineBasis(n_knots, degree).fit(F[c].to_numpy(dtype=float))
        self.df, self.diff_order = df, diff_order

    def blocks(self, data: TrialData, A: np.ndarray | None = None) -> list[np.ndarray]:
        F = data.frame
        A = data.treatment if A is None else np.broadcast_to(np.asarray(A, dtype=float), (data.n,))
        one = np.ones(data.n)
        out = []
        for _, kind, c, by in self.terms:
            if c is None:
                out.append(np.column_stack([one, A]))
                continue
            if kind == "bbs":
                B = self.bases[c].transform(F[c].to_numpy(dtype=float))
            else:
                B = np.column_stack([one, F[c].to_numpy(dtype=float)])
            out.append(B * A[:, None] if by else B)
        return out

    def learners(self, train: TrialData) -> LearnerSet:
        blocks = self.blocks(train)
        lams, pens = [], []
        for (name, kind, _, _), B in zip(self.terms, blocks):
            if kind == "bbs":
                P = difference_penalty(B.shape[1], self.diff_order)
                try:
                    lam = lambda_for_df(B, P, self.df)
                except ValueError as e:
                    raise MethodError(f"method 'mermboost': hyperparameter 'df' = {self.df} "
                                      f"is infeasible for learner {name}: {e}") from None
                lams.append(lam); pens.append(P)
            else:
                lams.append(0.0); pens.append(None)
        return LearnerSet(blocks, lams, pens, [t[0] for t in self.terms])

    def design(self, data: TrialData, A=None) -> np.ndarray:
        return np.column_stack(self.blocks(data, A))


def _cluster_constant_matrix(train: TrialData, codes: np.ndarray, correct_interactions: bool) -> np.ndarray:
    """Cluster-level ``[1, A, V, (A*V), individual covariates constant within every cluster]``."""
    J = int(codes.max()) + 1
    first = np.full(J, -1)
    first[codes[::-1]] = np.arange(len(codes))[::-1]
    F = train.frame
    A = train.treatment
    cols = [np.ones(J), A[first]]
    for c in train.covariates:
        v = F[c].to_numpy(dtype=float)
        lo = np.full(J, np.inf); hi = np.full(J, -np.inf)
        np.minimum.at(lo, codes, v); np.maximum.at(hi, codes, v)
        if np.all(lo == hi):
            cols.append(v[first])
            if correct_interactions:
                cols.append(v[first] * A[first])
    return np.column_stack(cols)


# --------------------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------------------
class Mermboost(Estimator):
    """mermboost S-learner for CATEs in a CRT (see the module docstring for the algorithm).

    Hyperparameters
    ---------------
    nu : step length (mboost ``boost_control(nu = 0.1)``).
    mstop : number of boosting iterations; ``None`` = chosen by cluster-grouped CV up to ``mstop_max``.
    mstop_max : largest number of iterations tried by CV (R: the ``mstop`` of the initial fit).
    cv_folds : number of cluster-grouped CV folds.
    df : degrees of freedom of each ``bbs`` learner (mboost default 4).
    n_knots, degree, diff_order : P-spline inner knots (20), degree (3, cubic), difference order (2).
    min_unique_smooth : individual covariates with fewer distinct values get ``bols`` learners.
    interactions : include the treatment-by-covariate learners (``by = A``); without them the
        CATE is constant.
    random_effect : refit the cluster random intercept every iteration (False = plain mboost).
    correct_re : apply the ``(I - P)`` correction of the random intercepts.
    correct_interactions : include ``A * V`` columns in ``P`` (see module docstring).
    n_bootstrap : cluster-bootstrap replicates for the 95% intervals (0: no intervals, NaN).
    boot_mstop : ``"fixed"`` (refits use the full-data ``mstop``) or ``"oob"`` (each refit boosts to
        ``mstop_scale * mstop_max`` and stops at ``mstop_scale`` times the iteration with the
        smallest error on its out-of-bag clusters).
    mstop_scale : factor (>= 1) applied to the CV-chosen ``mstop`` (undersmoothing for intervals
        that cover; 1 = R's choice). Not applied to a user-given ``mstop``.
    n_threads : worker processes for the CV folds and the bootstrap refits (``-1``: every core).
        The boosting loop is Python calling small numpy steps, which hold the GIL, so the workers
        are forked processes, not threads. Each fold and refit is computed exactly as in the
        sequential loop (the bootstrap samples are drawn first, in order), so the estimates are
        the same for every ``n_threads``.
    """

    name = "mermboost"
    label = "mermboost"
    designs = ("crt",)
    has_intervals = True
    library = "numpy (own implementation of mermboost/mboost)"

    def __init__(self, nu: float = 0.1, mstop: int | None = None, mstop_max: int = 1000,
                 cv_folds: int = 5, df: float = 4.0, n_knots: int = 20, degree: int = 3,
                 diff_order: int = 2, min_unique_smooth: int = 10, interactions: bool = True,
                 random_effect: bool = True, correct_re: bool = True, correct_interactions: bool = True,
                 n_bootstrap: int = 50, boot_mstop: str = "fixed", mstop_scale: float = 3.0,
                 n_threads: int = 1, random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())
        self._check()

    # ------------------------------------------------------------------ checks
    def _check(self):
        def bad(name, why):
            raise MethodError(f"method 'mermboost': hyperparameter '{name}' = {getattr(self, name)!r} {why}")
        for hp in ("nu", "df", "mstop_max", "cv_folds", "n_knots", "degree", "diff_order",
                   "min_unique_smooth", "n_bootstrap", "mstop_scale"):
            v = getattr(self, hp)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                bad(hp, "must be a number")
        if not (0 < float(self.nu) <= 1):
            bad("nu", "must be in (0, 1]")
        if self.mstop is not None and (isinstance(self.mstop, bool) or not isinstance(self.mstop, (int, np.integer))
                                       or self.mstop < 1):
            bad("mstop", "must be a positive integer or null (chosen by CV)")
        if int(self.mstop_max) != self.mstop_max or self.mstop_max < 1:
            bad("mstop_max", "must be a positive integer")
        if int(self.cv_folds) != self.cv_folds or self.cv_folds < 2:
            bad("cv_folds", "must be an integer >= 2")
        if int(self.n_bootstrap) != self.n_bootstrap or self.n_bootstrap < 0:
            bad("n_bootstrap", "must be an integer >= 0")
        if not (np.isfinite(float(self.mstop_scale)) and float(self.mstop_scale) >= 1):
            bad("mstop_scale", "must be a finite number >= 1")
        nt = self.n_threads
        if isinstance(nt, bool) or not isinstance(nt, (int, np.integer)) or not (nt >= 1 or nt == -1):
            bad("n_threads", "must be an integer >= 1 (or -1 for every core)")
        if self.boot_mstop not in ("oob", "fixed"):
            bad("boot_mstop", "must be 'oob' (re-chosen in every refit) or 'fixed' (the full-data mstop)")
        if self.n_knots < 0 or self.degree < 1 or not (1 <= self.diff_order <= self.n_knots + self.degree):
            bad("diff_order", f"is incompatible with n_knots={self.n_knots}, degree={self.degree}")

    def _spec(self, train: TrialData) -> _Spec:
        return _Spec(train, float(self.df), int(self.n_knots), int(self.degree), int(self.diff_order),
                     int(self.min_unique_smooth), bool(self.interactions))

    def _ri(self, train: TrialData, codes: np.ndarray) -> RandomIntercept | None:
        if not self.random_effect:
            return None
        H = cluster_projection(_cluster_constant_matrix(train, codes, bool(self.correct_interactions))) \
            if self.correct_re else None
        return RandomIntercept(codes, H)

    def _fit_once(self, train: TrialData, mstop: int, holdout: TrialData | None = None):
        spec = self._spec(train)
        L = spec.learners(train)
        codes = train.cluster_codes
        if holdout is None:
            return spec, L, boost(L, train.outcome, mstop, float(self.nu), self._ri(train, codes))
        fit = boost(L, train.outcome, mstop, float(self.nu), self._ri(train, codes),
                    X_eval=spec.design(holdout), y_eval=holdout.outcome)
        return spec, L, fit

    def _choose_mstop(self, train: TrialData, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        codes = train.cluster_codes
        J = int(codes.max()) + 1
        strata = cluster_strata(codes, train.treatment)
        try:
            k = n_folds(J, int(self.cv_folds), strata)
        except ValueError as e:
            raise MethodError(f"method 'mermboost': cannot choose mstop by cluster cross-validation on "
                              f"{train.name}: {e}; set 'mstop'") from None
        fold = cluster_folds(codes, k, rng, strata)
        def fold_risk(f):
            te = fold == f
            return self._fit_once(train.subset(~te), int(self.mstop_max), train.subset(te))[2].risk

        risk = np.zeros(int(self.mstop_max))
        for r in parallel_map(fold_risk, range(k), int(self.n_threads), processes=True):
            risk += r                                        # summed in fold order, as sequentially
        risk /= train.n
        return int(np.argmin(risk)) + 1, risk

    # ------------------------------------------------------------------ API
    def _fit(self, train: TrialData) -> None:
        train.validate()
        cv_ss = np.random.SeedSequence(self.random_state).spawn(2)[0]
        if self.mstop is None:
            m, self.cv_risk_ = self._choose_mstop(train, np.random.default_rng(cv_ss))
            self.mstop_cv_ = m
            self.mstop_ = self._scaled(m)
        else:
            self.mstop_, self.cv_risk_ = int(self.mstop), None
        self.spec_, self.learners_, self.fit_ = self._fit_once(train, self.mstop_)
        self.train_ = train
        self._boot_models = None

    def _scaled(self, m: int) -> int:
        return int(np.ceil(float(self.mstop_scale) * m))

    def _refit(self, picked: np.ndarray) -> tuple[_Spec, np.ndarray, int]:
        """One bootstrap refit on the clusters ``picked`` (codes of the training trial, repeats
        allowed): (spec, coefficients, mstop used).

        With ``mstop`` chosen by CV on the full data and ``boot_mstop = "oob"``, the refit chooses
        its own ``mstop``: it boosts to ``mstop_max`` on the bootstrap sample and stops where the
        population-level squared error on the out-of-bag clusters (those of the trial not drawn;
        about 37 %) is smallest. Without out-of-bag clusters it keeps the full-data ``mstop``.
        """
        sample = sample_of_clusters(self.train_, picked)
        oob = ~np.isin(self.train_.cluster_codes, picked)
        if self.mstop is not None or self.boot_mstop == "fixed" or not oob.any():
            spec, _, fit = self._fit_once(sample, self.mstop_)
            return spec, fit.coef, self.mstop_
        spec = self._spec(sample)
        L = spec.learners(sample)
        held = self.train_.subset(oob)
        M = int(self.mstop_max)
        fit = boost(L, sample.outcome, self._scaled(M), float(self.nu), self._ri(sample, sample.cluster_codes),
                    X_eval=spec.design(held), y_eval=held.outcome, keep_path=True)
        m = self._scaled(int(np.argmin(fit.risk[:M])) + 1)
        return spec, fit.path[m - 1], m

    def _bootstrap_models(self) -> list[tuple[_Spec, np.ndarray]]:
        """The ``n_bootstrap`` refits on cluster-bootstrap samples (clusters drawn with replacement
        within arm; computed once, then reused by every ``predict``), each with its own ``mstop``
        (see :meth:`_refit`). The samples are drawn first, in order; the refits then run on
        ``n_threads`` worker processes (:func:`~clusterhte.methods.bootstrap.parallel_map`)."""
        if self._boot_models is None:
            rng = np.random.default_rng(np.random.SeedSequence(self.random_state).spawn(2)[1])
            picks = [bootstrap_clusters(self.train_, rng) for _ in range(int(self.n_bootstrap))]
            refits = parallel_map(self._refit, picks, int(self.n_threads), processes=True)
            self._boot_models = [(spec, coef) for spec, coef, _ in refits]
            self.boot_mstops_ = np.array([m for *_, m in refits], dtype=int)
        return self._boot_models

    def _cate(self, test: TrialData) -> np.ndarray:
        D = self.spec_.design(test, 1.0) - self.spec_.design(test, 0.0)
        return D @ self.fit_.coef

    def _check_test(self, test: TrialData):
        missing = [c for c in self.train_.covariates if c not in test.frame.columns]
        if missing:
            raise MethodError(f"method 'mermboost': prediction table {test.name} lacks covariate column(s) {missing}")

    def _predict(self, test: TrialData) -> CateResult:
        self._check_test(test)
        point = self._cate(test)
        ri = self.fit_.ri
        info = {"mstop": self.mstop_, "nu": self.nu,
                "sigma2": float(ri.sigma2) if ri is not None else np.nan,
                "tau2": float(ri.tau2) if ri is not None else np.nan,
                "selected": {n: int(np.sum(self.fit_.selected == j)) for j, n in enumerate(self.learners_.names)}}
        if self.cv_risk_ is not None:
            info["cv_risk"] = self.cv_risk_
        B = int(self.n_bootstrap)
        if B == 0:
            return CateResult(point, info=info)
        draws = np.column_stack([(spec.design(test, 1.0) - spec.design(test, 0.0)) @ coef
                                 for spec, coef in self._bootstrap_models()])
        info["boot_mstop"] = self.boot_mstops_
        return bootstrap_result(point, draws, info=info, student_t=True)
