"""LMM: the linear mixed model a trial statistician fits, the baseline of the CRT study.

Paper label **LMM** (reference method). R original: ``lme4::lmer`` (REML)::

    lmer(Y ~ A + X + V + A:X + A:V + (1 | cluster), REML = TRUE)

The CATE is the population-level treatment contrast (random intercept zero, which cancels
anyway): ``tau(x, v) = beta_A + x' beta_{A:X} + v' beta_{A:V}``. Its 95% interval per row is the
t interval ``tau +- t_{df, 0.975} se`` with ``c`` the contrast row, ``se = sqrt(c' Phi c)`` and the
small-sample degrees of freedom of ``ddf`` (:mod:`clusterhte.mixed.ddf`):

* ``"kenward-roger"`` (default; pbkrtest / ``lmerTest::contest(ddf = "Kenward-Roger")``): ``Phi`` is
  the Kenward-Roger adjusted covariance, df from the expected information. Reproduces pbkrtest to
  1e-7 (tests/test_ddf.py). Chosen as the default because it stays calibrated when the cluster
  variance is estimated as 0 (12% of fits with 10 clusters) and in trials of 10 clusters.
* ``"satterthwaite"`` (lmerTest's default): ``Phi = (X'V^{-1}X)^{-1}``, df from the observed
  information; when the cluster variance is estimated as 0 lmerTest's df become the residual df
  (~n - p), here the expected information is used instead (about the number of clusters minus the
  cluster-level coefficients for the ATE).
* ``"none"``: z interval (lme4's ``confint(method = "Wald")``), the behaviour before small-sample
  df were added; with 10 clusters its ATE coverage was 0.86.

The ATE over the prediction rows gets the interval of the averaged contrast
(``info["ate_interval"]``, ``info["ate_df"]``); the per-row df are ``info["df"]``.

Fitting uses :func:`clusterhte.mixed.reml.fit_lmm` (the lme4 criterion, profiled REML).

Effect modification that is not linear
-------------------------------------
The default is **not** lme4's linear formula: each continuous individual covariate (at least
``min_unique`` distinct values) gets a restricted cubic spline with ``spline_knots = 4`` knots at
Harrell's default quantiles (``rms::rcs``; the same function space as ``splines::ns`` with the outer
knots as boundary knots), and ``spline_alpha = 0.05`` keeps its nonlinear terms only where the data
ask for them. This is the function selection of Royston & Sauerbrei's MFPI for treatment-covariate
interactions in trials (*Stat Med* 2004), with splines in place of fractional polynomials: in the
model with every spline term, fitted by ML, each block of ``k - 2`` nonlinear columns (one covariate
in the main effects, or in the treatment interaction) is tested against its linear form by a
likelihood-ratio test and kept when ``p < spline_alpha``; the final model is refitted by REML with
the Kenward-Roger intervals below. ``info["spline_tests"]`` lists every test, ``info["splines"]``
the covariates kept nonlinear. Cluster covariates stay linear (each spline term would cost a
between-cluster degree of freedom). A covariate whose knot quantiles are not distinct (heavy ties)
stays linear, with the reason in its ``note`` (with ``spline_alpha = None`` it is an error). A
trial with fewer than ``ROWS_PER_COLUMN = 10`` rows per column of the model with every spline term
(26 columns for three continuous and one binary individual covariate and two cluster covariates)
keeps the linear model: the ML likelihood-ratio tests are not calibrated there.

Why: when the true CATE is not linear, the linear LMM estimates its projection on ``[1, X, V]`` and
its intervals cover that projection, not ``tau(x, v)``. Battery, 20 replicates each
(``python -m clusterhte.evaluate.battery --methods lmm --reps 20``, and ``--set
lmm.spline_knots=0`` / ``--set lmm.spline_alpha=null``):

================================ ============================ ============ ==================
form                             pointwise coverage:          null: CATE   null: rows whose
                                 nonlinear / linear / all 8   SD           interval holds 0
================================ ============================ ============ ==================
linear (``spline_knots = 0``)    0.813 / 0.972 / (0.81-0.97)  0.222        0.924
all splines (``alpha = null``)   0.942 / 0.970 / (0.94-0.97)  0.260        0.938
function selection (default)     0.912 / 0.971 / (0.91-0.97)  0.223        0.926
================================ ============================ ============ ==================

PEHE on the nonlinear scenario: 0.351 (linear), 0.277 (all splines), 0.279 (selection); on the
others the selection is within 0.006 of the linear model.

Keeping every spline term covers but estimates each without shrinkage, so it invents spread under
no effect; the test keeps the linear model's precision where the effect is linear. The selection is
not accounted for in the intervals (as in MFPI); the table measures what that costs. The GAMM
shrinks the same curvature by REML instead of testing it (0.921 on the nonlinear scenario).

``spline_knots = 0`` is the paper's LMM (lme4's formula), which the CRT simulation study and the
TASSH analysis use (``config/config.yaml``, ``config/paper.yaml``); ``spline_alpha = null`` keeps
every spline term (the pre-specified, unpenalized effect model of the PATH statement).

Aliased columns (a binary cluster covariate equal to the arm, or ``A x V`` all zero, frequent with
10 clusters) are dropped with an :class:`~clusterhte.mixed.design.AliasedColumnsWarning` naming
them, as lme4 drops them (same in-order rank test, tolerance 1e-7); their coefficients are 0 in
``info["beta"]`` and ``info["dropped"]`` lists them. The CATE of a row then lacks that term (for
``A x V`` all zero, the effect at ``V = 1`` is not estimable from the trial and is extrapolated
with the ``A x V`` coefficient 0, as lme4's ``predict`` does).

A trial with as many clusters as the model has independent cluster-level columns (intercept,
treatment, cluster covariates, their treatment interactions; 6 clusters with two cluster
covariates) is refused with a :class:`~clusterhte.data.trial.TrialDataError`: the fixed effects
then absorb every random intercept, the cluster variance is not identified and no cluster-level
contrast has an error estimate (lme4 returns a singular fit; its Kenward-Roger df are 1 and
some adjusted variances come out negative). See
:func:`clusterhte.mixed.design.require_between_cluster_df`.

Differences from the R original
-------------------------------
* The default effect model adds the selected spline terms (above); ``spline_knots = 0`` is lme4's.
* Covariates in ``interactions`` (default: all) interact with treatment; others enter as main
  effects only.
* Satterthwaite df at a zero cluster variance: see above (lmerTest gives the residual df).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from clusterhte.data.trial import TrialData, TrialDataError
from clusterhte.methods.base import CateResult, Estimator, MethodError, OutcomePrediction
from clusterhte.mixed.ddf import DDF_METHODS, t_interval, varcomp_inference
from clusterhte.mixed.design import (AliasedColumnsWarning, drop_aliased, independent_columns,
                                    require_between_cluster_df)
from clusterhte.mixed.reml import LMMError, fit_lmm
from clusterhte.methods.splines import RCS_QUANTILES, rcs_basis, rcs_knots

Z975 = float(stats.norm.ppf(0.975))
# The function selection runs only with at least this many rows per column of the model with every
# spline term: its likelihood-ratio tests are ML chi-squared approximations, and with fewer rows the
# ML residual variance is biased down enough to inflate them (n / (n - p) >= 1.11 at 10 rows per column).
ROWS_PER_COLUMN = 10
NEAR_ALIAS_TOL = 1e-4  # only to name the culprits when the fit refuses a nearly singular design


def _spline_test(covariate: str, part: str, lr: float = np.nan, df: int = 0, p: float = np.nan,
                 kept: bool = False, note: str = "") -> dict:
    """One record of ``info["spline_tests"]``: a block's likelihood-ratio test, or why it has none."""
    return {"covariate": covariate, "part": part, "lr": lr, "df": df, "p": p, "kept": kept, "note": note}


class LMM(Estimator):
    """Random-intercept linear mixed model with treatment-by-covariate interactions, fitted by REML.

    Hyperparameters
    ---------------
    interactions : covariate names that interact with treatment; ``None`` = every covariate,
        ``[]`` = none (constant CATE = the adjusted ATE).
    reml : REML (True, lme4's default) or ML.
    spline_knots : 0 (linear, lme4's formula) or 3-7 (default 4): restricted cubic splines of the
        continuous individual covariates (see the module docstring).
    spline_alpha : level of the likelihood-ratio test that keeps a covariate's nonlinear spline
        terms (default 0.05); ``None`` keeps every spline term.
    min_unique : individual covariates with fewer distinct values stay linear under
        ``spline_knots``.
    ddf : small-sample degrees of freedom of the t intervals, ``"kenward-roger"`` (default, needs
        ``reml = True`` as in pbkrtest), ``"satterthwaite"`` or ``"none"`` (z intervals).
    """

    name = "lmm"
    label = "LMM"
    designs = ("crt",)
    has_intervals = True
    library = "numpy/scipy (clusterhte.mixed.reml, lme4 criterion)"

    def __init__(self, interactions: list | None = None, reml: bool = True, ddf: str = "kenward-roger",
                 spline_knots: int = 4, spline_alpha: float | None = 0.05, min_unique: int = 10,
                 random_state: int | None = None):
        super().__init__(random_state)
        self._set_params(locals())
        if spline_alpha is not None and (isinstance(spline_alpha, bool) or not isinstance(spline_alpha, (int, float))
                                         or not 0 < spline_alpha < 1):
            raise MethodError(f"method 'lmm': hyperparameter 'spline_alpha' must be null (keep every spline "
                              f"term) or a level in (0, 1), got {spline_alpha!r}")
        if isinstance(spline_knots, bool) or spline_knots not in (0, *RCS_QUANTILES):
            raise MethodError(f"method 'lmm': hyperparameter 'spline_knots' must be 0 (linear) or one of "
                              f"{list(RCS_QUANTILES)}, got {spline_knots!r}")
        if isinstance(min_unique, bool) or not isinstance(min_unique, (int, np.integer)) or min_unique < 2:
            raise MethodError(f"method 'lmm': hyperparameter 'min_unique' must be an integer >= 2, got {min_unique!r}")
        if ddf not in DDF_METHODS:
            raise MethodError(f"method 'lmm': hyperparameter 'ddf' must be one of {list(DDF_METHODS)}, got {ddf!r}")
        if ddf == "kenward-roger" and not reml:
            raise MethodError("method 'lmm': hyperparameter 'ddf' = 'kenward-roger' needs reml: true "
                              "(Kenward-Roger is defined for REML fits); use 'satterthwaite' with ML")
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

    def _terms(self, data: TrialData, columns, knots: dict) -> np.ndarray:
        """The covariates ``columns`` as model columns: each one, followed by its restricted cubic
        spline terms when it has knots in ``knots``."""
        X = data.X(columns)
        parts = []
        for k, c in enumerate(columns):
            parts.append(X[:, k:k + 1])
            if c in knots:
                parts.append(rcs_basis(X[:, k], knots[c]))
        return np.column_stack(parts) if parts else np.empty((data.n, 0))

    @staticmethod
    def _names(columns, knots: dict) -> list[str]:
        return [nm for c in columns
                for nm in [c] + [c + "'" * (j + 1) for j in range(len(knots.get(c, ())) - 2)]]

    def _all_names(self, main: dict, inter: dict) -> list[str]:
        return (["(Intercept)", "treatment"] + self._names(self.covariates_, main)
                + [f"treatment:{c}" for c in self._names(self.inter_, inter)])

    def _design(self, data: TrialData, A=None, main: dict | None = None, inter: dict | None = None) -> np.ndarray:
        A = data.treatment if A is None else np.broadcast_to(np.asarray(A, dtype=float), (data.n,))
        Xc = self._terms(data, self.covariates_, self.main_knots_ if main is None else main)
        Xi = self._terms(data, self.inter_, self.inter_knots_ if inter is None else inter)
        return np.column_stack([np.ones(data.n), A, Xc, A[:, None] * Xi])

    def _contrast(self, data: TrialData) -> np.ndarray:
        """Rows ``c`` with ``c' beta`` the CATE: design at A = 1 minus design at A = 0."""
        Xi = self._terms(data, self.inter_, self.inter_knots_)
        return np.column_stack([np.zeros(data.n), np.ones(data.n),
                                np.zeros((data.n, len(self._names(self.covariates_, self.main_knots_)))), Xi])

    def _select_splines(self, train: TrialData, knots: dict) -> tuple[dict, dict]:
        """Function selection (``spline_alpha``): which covariates keep their spline terms in the
        main effects and in the treatment interactions.

        In the model with every candidate's spline terms in both parts, fitted by ML, each block of
        ``k - 2`` nonlinear columns (one covariate, one part) is tested against its linear form by a
        likelihood-ratio test (chi-squared on the number of columns the block adds); the block stays
        when ``p < spline_alpha``. Every block is tested in the same full model (one backward step:
        the decisions do not depend on an order). A fit that fails leaves the block linear."""
        self.selection_ = []
        if not knots:
            return {}, {}
        y, g = train.outcome, train.cluster
        inter_cand = {c: t for c, t in knots.items() if c in self.inter_}
        blocks = [(part, c, t) for part, cand in (("main", knots), ("interaction", inter_cand))
                  for c, t in cand.items()]

        def all_linear(note):
            self.selection_ = [_spline_test(c, part, note=note) for part, c, _ in blocks]
            return {}, {}

        n_cols = len(self._all_names(knots, inter_cand))
        if train.n < ROWS_PER_COLUMN * n_cols:
            return all_linear(f"{train.n} rows are fewer than {ROWS_PER_COLUMN} per column of the model with "
                              f"every spline term ({n_cols} columns): every covariate stays linear")

        def loglik(main, inter):
            names = self._all_names(main, inter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AliasedColumnsWarning)
                X, keep, _ = drop_aliased(self._design(train, main=main, inter=inter), names, "")
            return fit_lmm(y, X, g, reml=False).llf, int(keep.sum())

        try:
            ll_full, p_full = loglik(knots, inter_cand)
        except LMMError:
            return all_linear("the model with every spline term cannot be fitted")
        chosen = {"main": {}, "interaction": {}}
        for part, c, t in blocks:
            main = {k: v for k, v in knots.items() if not (part == "main" and k == c)}
            inter = {k: v for k, v in inter_cand.items() if not (part == "interaction" and k == c)}
            try:
                ll, p = loglik(main, inter)
            except LMMError:
                ll, p = np.nan, p_full
            df = p_full - p
            lr = max(0.0, 2.0 * (ll_full - ll)) if np.isfinite(ll) else np.nan
            pval = float(stats.chi2.sf(lr, df)) if df > 0 and np.isfinite(lr) else np.nan
            kept = bool(np.isfinite(pval) and pval < float(self.spline_alpha))
            if kept:
                chosen[part][c] = t
            self.selection_.append(_spline_test(c, part, lr, df, pval, kept,
                                                "" if np.isfinite(pval) else "reduced model not fitted"))
        return chosen["main"], chosen["interaction"]

    # ------------------------------------------------------------------ API
    def _fit(self, train: TrialData) -> None:
        train.validate()
        self.covariates_ = list(train.covariates)
        self.inter_ = self._interacting(train)
        self.knots_, untestable = {}, []
        if self.spline_knots:
            for c in train.individual_covariates:
                x = train.frame[c].to_numpy(dtype=float)
                if np.unique(x).size >= int(self.min_unique):
                    try:
                        self.knots_[c] = rcs_knots(x, int(self.spline_knots))
                    except ValueError as e:
                        if self.spline_alpha is not None:     # selection: such a covariate stays linear
                            untestable.append(_spline_test(c, "both", note=str(e)))
                            continue
                        raise MethodError(f"method 'lmm': {train.name}: covariate {c!r}: {e}; use fewer "
                                          f"'spline_knots' or a larger 'min_unique'") from None
        if self.spline_alpha is None:
            self.selection_ = []
            self.main_knots_ = dict(self.knots_)
            self.inter_knots_ = {c: t for c, t in self.knots_.items() if c in self.inter_}
        else:
            self.main_knots_, self.inter_knots_ = self._select_splines(train, self.knots_)
            self.selection_ += untestable
        self.names_ = self._all_names(self.main_knots_, self.inter_knots_)
        X, self.keep_, self.dropped_ = drop_aliased(self._design(train), self.names_,
                                                    f"{train.name}: method 'lmm'")
        require_between_cluster_df(X, train.cluster_codes, [nm for nm, k in zip(self.names_, self.keep_) if k],
                                   f"{train.name}: method 'lmm'",
                                   "Use fewer cluster covariates, or leave them out of the treatment "
                                   "interactions (hyperparameter 'interactions').")
        try:
            self.result_ = fit_lmm(train.outcome, X, train.cluster, reml=bool(self.reml))
        except LMMError as e:
            kept = [nm for nm, k in zip(self.names_, self.keep_) if k]
            near = [nm for nm, k in zip(kept, independent_columns(X, NEAR_ALIAS_TOL)) if not k]
            hint = f" (nearly collinear with the columns before them: {near})" if near else ""
            raise TrialDataError(f"{train.name}: method 'lmm' cannot fit Y ~ {' + '.join(self.names_[1:])} "
                                 f"+ (1 | cluster): {e}{hint}") from None
        self.beta_ = np.zeros(len(self.names_))
        self.beta_[self.keep_] = self.result_.beta
        r = self.result_
        self.inference_ = varcomp_inference(train.outcome, X, [train.cluster_codes],
                                            [float(r.G[0, 0]), float(r.sigma2)])

    @property
    def fit_note(self) -> str:
        """One line for the fit log: the covariates the function selection kept nonlinear."""
        if self.spline_alpha is None or not self.knots_:
            return ""
        kept = [f"{part} {c}" for part, knots in (("main", self.main_knots_), ("interaction", self.inter_knots_))
                for c in sorted(knots)]
        return "spline terms kept: " + (", ".join(kept) if kept else "none (linear)")

    def predict_outcome(self, train: TrialData) -> OutcomePrediction:
        """X'beta (marginal) and X'beta + the cluster's BLUP (conditional) at the observed A."""
        marginal = self._design(train) @ self.beta_
        blup = self.result_.blup_for(train.cluster)[:, 0]
        return OutcomePrediction(marginal, marginal + blup)

    def _predict(self, test: TrialData) -> CateResult:
        missing = [c for c in self.covariates_ if c not in test.frame.columns]
        if missing:
            raise MethodError(f"method 'lmm': prediction table {test.name} lacks covariate column(s) {missing}")
        r = self.result_
        C = self._contrast(test)[:, self.keep_]
        point = C @ r.beta
        se, df = self.inference_.inference(C, self.ddf)
        lo, hi = t_interval(point, se, df)
        cbar = C.mean(axis=0, keepdims=True)
        ase, adf = self.inference_.inference(cbar, self.ddf)
        ate = float((cbar @ r.beta)[0])
        alo, ahi = t_interval(ate, ase[0], adf[0])
        info = {"ate_interval": (float(alo), float(ahi)), "ate_se": float(ase[0]), "ate_df": float(adf[0]),
                "se": se, "df": df, "ddf": self.ddf, "dropped": list(self.dropped_),
                "beta": dict(zip(self.names_, map(float, self.beta_))),
                "splines": {"main": sorted(self.main_knots_), "interaction": sorted(self.inter_knots_)},
                "spline_tests": list(self.selection_),
                "tau2": float(r.G[0, 0]), "sigma2": float(r.sigma2), "llf": float(r.llf),
                "converged": bool(r.converged), "singular": bool(r.singular)}
        return CateResult(point, lo, hi, info=info)
