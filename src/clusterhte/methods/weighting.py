"""Weighting (outcome-weighted learning) estimators of optimal treatment regimes in multisite trials.

Paper: Suk & Park (2023, Psychometrika), Section 4: W-base, W-noaug, W-aug, W-augID, WS-noaug,
WS-aug, WS-augID. R original: ``personalized::fit.subgroup(loss = "sq_loss_lasso",
method = "weighting", nfolds = 5)`` as called in youmisuk/multisiteOTR (``SimulationCodes.R``,
``CCTdataAnalysisCodes.R``).

For a binary treatment T, propensity pi = P(T = 1 | cluster) and moderators x, the weighting
method with squared loss fits, with the lasso,

    y - B  ~  (2T - 1) * [1, x]' beta        (no intercept),
    weights 1/pi (treated), 1/(1 - pi) (control),

where B is an optional augmentation (offset). The benefit score ``f(x) = [1, x]' beta`` estimates
**Delta(x) / 2** (E[Y | T=1, x] - E[Y | T=0, x] = 2 f(x), because of the +-1 coding); treatment is
recommended iff f(x) > 0. Only the sign (and rank) of the score is comparable with the Q-learning
scores, which are on the Delta scale.

The variants (spec ``otr_multisite.md`` §0, §2):

============  ======================  ==================================  ====================
Label         propensity              augmentation (offset B)             moderators x
============  ======================  ==================================  ====================
W-base        overall share treated   none                                moderators
W-noaug       cluster share treated   none                                moderators
W-aug         cluster share treated   OLS of y on [1, covariates]         moderators
W-augID       cluster share treated   OLS of y on [1, covariates, D]      moderators
WS-noaug      cluster share treated   none                                moderators, D
WS-aug        cluster share treated   OLS of y on [1, covariates]         moderators, D
WS-augID      cluster share treated   OLS of y on [1, covariates, D]      moderators, D
============  ======================  ==================================  ====================

D = dummies of training clusters 2..J (reference: the first cluster in sorted label order).
The augmentation is fitted in-sample on the pooled arms (no cross-fitting, ignores T), exactly as
the authors' ``aug.func_l`` / ``aug.func_s``; "covariates" are all individual and cluster
covariates of the table.

The lasso is glmnet's (``clusterhte.methods.lasso``): weighted, no intercept, standardised
columns, lambda chosen by 5-fold *individual-level* random CV with ``lambda.min``; if no
coefficient other than the treatment column is nonzero the CV fit is repeated with fresh folds,
up to ``max_refits`` fits in total (the last is kept), as in ``fit.subgroup``.

Penalty factors: the treatment column is never penalised. ``penalized_moderators = None`` gives
the simulation defaults -- W-* penalise every moderator, WS-* leave every moderator unpenalised
and penalise only the cluster dummies. A list penalises exactly the named moderators (the others
are unpenalised; cluster dummies are always penalised): the CCT analysis is
``penalized_moderators = [the three s_teneviv dummies]``, i.e. ``c(0, rep(1,3), rep(0,9)[, rep(1,25)])``.

Differences from the R code:

* folds come from ``numpy.random.default_rng(random_state)`` (``sample(rep(1:5, length = n))`` in
  R), so they differ from R's for the same seed; the same ``random_state`` gives the same folds
  for every variant, like the CCT script's ``set.seed(123)`` before each fit. ``fit(train,
  foldid=...)`` takes R's fold labels instead and then reproduces ``cv.glmnet`` fold for fold
  (tests/test_weighting.py checks the decisions against glmnet 4.1-6 on Designs 1-4);
* test rows of a cluster not seen in training get all cluster dummies 0 (the reference cluster's
  effect); the R code only ever predicts on training clusters;
* the propensity is checked to be strictly inside (0, 1) per cluster with an error naming the
  clusters (``fit.subgroup`` stops with a generic message).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from clusterhte.data.trial import TrialData
from clusterhte.methods.base import CateResult, Estimator, MethodError
from clusterhte.methods.lasso import CVLasso, cv_lasso


def cluster_dummies(cluster: np.ndarray, labels: Sequence) -> np.ndarray:
    """0/1 matrix (n, len(labels)) with column k = 1 where ``cluster == labels[k]``.

    Rows whose cluster is not among ``labels`` (the reference cluster or an unseen one) are all 0.
    """
    labels = pd.Index(labels)
    pos = labels.get_indexer(pd.Index(cluster))
    D = np.zeros((len(cluster), len(labels)))
    hit = pos >= 0
    D[np.flatnonzero(hit), pos[hit]] = 1.0
    return D


def _plain(v):
    """A numpy scalar as the Python value (for readable messages)."""
    return v.item() if isinstance(v, np.generic) else v


def propensity(train: TrialData, by_cluster: bool, clusters: tuple | None = None) -> np.ndarray:
    """Estimated P(T = 1) per row: the cluster's treated share, or the overall share.

    ``clusters``: ``train.cluster_factors()`` (= ``pd.factorize(train.frame["cluster"], sort=True)``)
    when the caller has it.
    Raises MethodError naming the clusters (or the table) whose share is 0 or 1.
    """
    t = train.treatment
    if not by_cluster:
        share = float(t.mean())
        if not 0.0 < share < 1.0:
            raise MethodError(f"{train.name}: the overall treated share is {share:g}; the weighting "
                              "estimators need both arms")
        return np.full(train.n, share)
    codes, labels = train.cluster_factors() if clusters is None else clusters
    J = len(labels)
    share = np.bincount(codes, weights=t, minlength=J) / np.bincount(codes, minlength=J)
    bad = np.flatnonzero((share <= 0.0) | (share >= 1.0))
    if bad.size:
        shown = ", ".join(f"{_plain(labels[i])!r} (share {share[i]:g})" for i in bad[:10])
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise MethodError(f"{train.name}: the treated share must be strictly between 0 and 1 in every "
                          f"cluster; cluster(s) {shown}{more} have only one arm")
    return share[codes]


def ols_fitted(Z: np.ndarray, y: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
    """Fitted values of OLS of y on [1, Z], or on [1, Z, cluster dummies] when ``codes`` is given.

    R ``lm(y ~ Z)`` / ``lm(y ~ Z + factor(id))``. With clusters the fit uses the within
    (Frisch-Waugh-Lovell) form: fitted = cluster mean of y + (Z - cluster means of Z) @ gamma, which
    equals the dummy regression's fitted values without forming the J dummies. Aliased columns
    (e.g. cluster-level covariates next to the dummies) are harmless: fitted values are a projection.
    """
    if codes is None:
        A = np.column_stack([np.ones(len(y)), Z])
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        return A @ coef
    J = int(codes.max()) + 1
    nj = np.bincount(codes, minlength=J).astype(float)
    ybar = np.bincount(codes, weights=y, minlength=J) / nj
    Zbar = np.stack([np.bincount(codes, weights=z, minlength=J) for z in Z.T], axis=1) / nj[:, None] \
        if Z.shape[1] else np.zeros((J, 0))
    Zw = Z - Zbar[codes]
    yw = y - ybar[codes]
    gamma, *_ = np.linalg.lstsq(Zw, yw, rcond=None) if Z.shape[1] else (np.zeros(0),)
    return ybar[codes] + Zw @ gamma


class _Weighting(Estimator):
    """Shared implementation; subclasses fix the three switches below."""

    designs = ("multisite",)
    has_intervals = False
    library = "numpy + numba (clusterhte.methods.lasso: port of glmnet)"

    _cluster_propensity: bool = True
    _augment: str | None = None          # None, "covariates" or "covariates+cluster"
    _site_moderators: bool = False       # WS-*: cluster dummies among the moderators

    def __init__(self, penalized_moderators: list | None = None, nfolds: int = 5,
                 nlambda: int = 100, lambda_min_ratio: float | None = None, max_refits: int = 5,
                 random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())

    # ------------------------------------------------------------------ pieces
    def _check_params(self) -> None:
        for k in ("nfolds", "nlambda", "max_refits"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise MethodError(f"method '{self.name}': hyperparameter '{k}' must be an integer, got {v!r}")
        if self.nfolds < 3:
            raise MethodError(f"method '{self.name}': hyperparameter 'nfolds' must be >= 3, got {self.nfolds}")
        if self.nlambda < 1:
            raise MethodError(f"method '{self.name}': hyperparameter 'nlambda' must be >= 1, got {self.nlambda}")
        if self.max_refits < 1:
            raise MethodError(f"method '{self.name}': hyperparameter 'max_refits' must be >= 1, got {self.max_refits}")
        r = self.lambda_min_ratio
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1):
            raise MethodError(f"method '{self.name}': hyperparameter 'lambda_min_ratio' must be None or "
                              f"in (0, 1), got {r!r}")
        pm = self.penalized_moderators
        if pm is not None and (isinstance(pm, str) or not all(isinstance(m, str) for m in pm)):
            raise MethodError(f"method '{self.name}': hyperparameter 'penalized_moderators' must be None "
                              f"or a list of moderator names, got {pm!r}")

    def _penalty(self, moderators: tuple[str, ...], n_dummies: int) -> np.ndarray:
        pm = self.penalized_moderators
        if pm is None:
            mod_pen = np.zeros(len(moderators)) if self._site_moderators else np.ones(len(moderators))
        else:
            unknown = [m for m in pm if m not in moderators]
            if unknown:
                raise MethodError(f"method '{self.name}': hyperparameter 'penalized_moderators' names "
                                  f"{unknown}, which are not moderators of the table; moderators: "
                                  f"{list(moderators)}")
            mod_pen = np.isin(np.asarray(moderators, dtype=object), list(pm)).astype(float)
        return np.concatenate([[0.0], mod_pen, np.ones(n_dummies)])

    def _offset(self, train: TrialData, codes: np.ndarray | None = None, y: np.ndarray | None = None) -> np.ndarray:
        """The augmentation B (``codes``, ``y``: the training cluster codes and outcome, when the
        caller has them)."""
        if self._augment is None:
            return np.zeros(train.n)
        if self._augment != "covariates+cluster":
            codes = None
        elif codes is None:
            codes = train.cluster_codes
        return ols_fitted(train.X(), train.outcome if y is None else y, codes)

    def _moderator_matrix(self, data: TrialData) -> np.ndarray:
        missing = [m for m in self.moderators_ if m not in data.frame.columns]
        if missing:
            raise MethodError(f"method '{self.name}': {data.name} lacks moderator column(s) {missing}")
        return data.X(self.moderators_)

    def _dummy_codes(self, data: TrialData) -> np.ndarray:
        """Position of each row's cluster among ``dummy_clusters_`` (-1: reference or unseen)."""
        return pd.Index(self.dummy_clusters_).get_indexer(pd.Index(data.cluster))

    def fit(self, train: TrialData, foldid=None) -> "_Weighting":
        """Fit on ``train``. ``foldid`` (optional): one CV fold label per training row, as
        ``cv.glmnet(foldid = )``, to reproduce an R analysis fold for fold; the folds are then
        used for a single CV fit (no refits: the same folds give the same fit)."""
        if foldid is not None:
            f = np.asarray(foldid).ravel()
            if f.shape[0] != train.n:
                raise MethodError(f"method '{self.name}': foldid has {f.shape[0]} entries, "
                                  f"{train.name} has {train.n} rows")
            if f.dtype.kind == "f" and not np.all(np.isfinite(f)):
                raise MethodError(f"method '{self.name}': foldid has missing or non-finite entries "
                                  f"at rows {np.flatnonzero(~np.isfinite(f))[:8].tolist()}")
            if np.unique(f).size < 3:
                raise MethodError(f"method '{self.name}': foldid must have at least 3 folds, got "
                                  f"{np.unique(f).size}")
            foldid = f
        self._foldid = foldid
        return super().fit(train)

    # ------------------------------------------------------------------ fit / predict
    def _fit(self, train: TrialData) -> None:
        self._check_params()
        moderators = tuple(train.moderators)
        if not moderators:
            raise MethodError(f"method '{self.name}': {train.name} declares no moderators; the "
                              "weighting estimators need at least one")
        codes, labels = train.cluster_factors()
        self.moderators_ = moderators
        self.reference_cluster_ = _plain(labels[0])
        self.dummy_clusters_ = [_plain(c) for c in labels[1:]]

        pi = propensity(train, self._cluster_propensity, (codes, labels))
        t = train.treatment
        y = train.outcome
        w = np.where(t == 1, 1.0 / pi, 1.0 / (1.0 - pi))
        offset = self._offset(train, codes, y)
        sign = 2.0 * t - 1.0
        xt = sign[:, None] * np.column_stack([np.ones(train.n), self._moderator_matrix(train)])
        n_dum = len(self.dummy_clusters_) if self._site_moderators else 0
        # WS-*: the site-dummy columns sign * 1{cluster = j} enter through per-site sums
        dummies = (codes - 1, sign, n_dum) if n_dum else None
        pf = self._penalty(moderators, n_dum)
        self.columns_ = ["Trt"] + list(moderators) + [f"cluster[{c}]" for c in self.dummy_clusters_[:n_dum]]

        foldid = getattr(self, "_foldid", None)
        if foldid is not None:
            cv = cv_lasso(xt, y, w, pf, foldid, offset=offset, nlambda=self.nlambda,
                          lambda_min_ratio=self.lambda_min_ratio, dummies=dummies)
            k = 1
        else:
            rng = np.random.default_rng(self.random_state)
            base = np.arange(train.n) % self.nfolds + 1   # R: rep(1:nfolds, length = n)
            for k in range(1, self.max_refits + 1):
                foldid = rng.permutation(base)
                cv = cv_lasso(xt, y, w, pf, foldid, offset=offset, nlambda=self.nlambda,
                              lambda_min_ratio=self.lambda_min_ratio, dummies=dummies)
                if np.any(cv.coef_min[1:] != 0):
                    break
        self.cv_: CVLasso = cv
        self.n_fits_ = k
        self.coef_ = cv.coef_min.copy()
        self.lambda_min_ = cv.lambda_min
        self.penalty_factor_ = pf
        self.propensity_ = pi
        self.weights_ = w
        self.offset_ = offset

    def _predict(self, test: TrialData) -> CateResult:
        x = self._moderator_matrix(test)
        m = 1 + x.shape[1]
        score = np.column_stack([np.ones(test.n), x]) @ self.coef_[:m]
        if self._site_moderators:
            pos = self._dummy_codes(test)
            site = np.r_[self.coef_[m:], 0.0]        # -1 (reference / unseen cluster) -> 0
            score = score + site[pos]
        return CateResult(point=score, cutoff=0.0, larger_is_better=True,
                          info={"scale": "delta/2", "lambda_min": self.lambda_min_,
                                "n_fits": self.n_fits_,
                                "coef": dict(zip(self.columns_, map(float, self.coef_)))})


class WBase(_Weighting):
    """W-base: overall-share propensity, no augmentation, moderators only (R object ``m0``)."""

    name = "w-base"
    label = "W-base"
    _cluster_propensity = False


class WNoaug(_Weighting):
    """W-noaug: cluster-share propensity, no augmentation (R object ``m1``)."""

    name = "w-noaug"
    label = "W-noaug"


class WAug(_Weighting):
    """W-aug: cluster-share propensity, offset = OLS on the covariates (R ``m1_aug_l``)."""

    name = "w-aug"
    label = "W-aug"
    _augment = "covariates"


class WAugID(_Weighting):
    """W-augID: cluster-share propensity, offset = OLS on covariates + cluster dummies (R ``m1_aug_s``)."""

    name = "w-augid"
    label = "W-augID"
    _augment = "covariates+cluster"


class WSNoaug(_Weighting):
    """WS-noaug: as W-noaug with cluster dummies among the moderators (R ``m2``, CCT "W[S]-noaug")."""

    name = "ws-noaug"
    label = "WS-noaug"
    _site_moderators = True


class WSAug(_Weighting):
    """WS-aug: as W-aug with cluster dummies among the moderators (R ``m2_aug_l``)."""

    name = "ws-aug"
    label = "WS-aug"
    _augment = "covariates"
    _site_moderators = True


class WSAugID(_Weighting):
    """WS-augID: as W-augID with cluster dummies among the moderators (R ``m2_aug_s``)."""

    name = "ws-augid"
    label = "WS-augID"
    _augment = "covariates+cluster"
    _site_moderators = True


__all__ = ["WBase", "WNoaug", "WAug", "WAugID", "WSNoaug", "WSAug", "WSAugID",
           "cluster_dummies", "propensity", "ols_fitted"]
