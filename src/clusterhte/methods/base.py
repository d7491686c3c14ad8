"""The estimator interface shared by every method, and the result it returns.

Usage (scikit-learn style)::

    est = clusterhte.methods.get("q-rs")(**hyperparameters, random_state=seed)
    est.fit(train)                      # train: TrialData
    res = est.predict(test)             # CateResult

Hyperparameters are keyword arguments of ``__init__`` whose defaults equal
``config/methods.yaml``; ``get_params()`` returns them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from clusterhte.data.trial import TrialData


class MethodError(ValueError):
    """A method was asked for something it cannot do (unknown name, bad hyperparameter, ...)."""


@dataclass
class CateResult:
    """Per-row estimates of a method on a prediction table.

    point : CATE (CRT methods) or benefit score (OTR methods), one value per row.
    lower, upper : 95% interval limits; NaN where the method has none.
    draws : optional (n_rows, n_draws) posterior or bootstrap draws of the CATE.
    cutoff, larger_is_better : the decision rule ``point > cutoff`` (or ``<`` when smaller
        outcomes are better, e.g. blood pressure).
    info : method-specific diagnostics (variance components, chosen lambda, ...).
    """

    point: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    draws: np.ndarray | None = None
    cutoff: float = 0.0
    larger_is_better: bool = True
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.point = np.asarray(self.point, dtype=float).ravel()
        n = self.point.shape[0]
        self.lower = np.full(n, np.nan) if self.lower is None else np.asarray(self.lower, dtype=float).ravel()
        self.upper = np.full(n, np.nan) if self.upper is None else np.asarray(self.upper, dtype=float).ravel()
        if self.draws is not None:
            self.draws = np.asarray(self.draws, dtype=float)
            if self.draws.ndim != 2 or self.draws.shape[0] != n:
                raise ValueError(f"draws must have shape (n_rows={n}, n_draws), got {self.draws.shape}")

    @property
    def decision(self) -> np.ndarray:
        """1 where treatment is recommended (benefit beyond the cutoff), else 0."""
        d = self.point > self.cutoff if self.larger_is_better else self.point < self.cutoff
        return d.astype(np.int8)

    def ate(self, level: float = 0.95) -> tuple[float, float, float]:
        """Average of the CATEs over the prediction rows, with a ``level`` interval.

        From ``info["ate_interval"]`` when the method computed one (Wald, half-sampling, normal
        bootstrap); else from draws (the per-draw row average, equal-tailed quantiles); else NaN.
        """
        if "ate_interval" in self.info:
            lo, hi = self.info["ate_interval"]
            return float(self.point.mean()), float(lo), float(hi)
        if self.draws is not None:
            d = self.draws.mean(axis=0)
            a = (1 - level) / 2
            lo, hi = np.quantile(d, [a, 1 - a])
            return float(self.point.mean()), float(lo), float(hi)
        lo, hi = self.info.get("ate_interval", (np.nan, np.nan))
        return float(self.point.mean()), float(lo), float(hi)

    @classmethod
    def from_draws(cls, draws: np.ndarray, level: float = 0.95, **kw) -> "CateResult":
        """Posterior mean and equal-tailed ``level`` interval from (n_rows, n_draws) draws."""
        draws = np.asarray(draws, dtype=float)
        a = (1 - level) / 2
        lo, hi = np.quantile(draws, [a, 1 - a], axis=1)
        return cls(point=draws.mean(axis=1), lower=lo, upper=hi, draws=draws, **kw)


@dataclass
class OutcomePrediction:
    """Predicted outcomes of the rows a model was fitted on, at their observed treatment.

    ``marginal``: the random effect set to 0 (the population-level prediction the CATE uses);
    ``conditional``: with each row's predicted cluster effect; ``replicates``: (n_draws, n)
    outcomes replicated from the posterior predictive distribution (Bayesian methods), else None.
    """

    marginal: np.ndarray
    conditional: np.ndarray
    replicates: np.ndarray | None = None


class Estimator:
    """Base class. Subclasses set the class attributes and implement ``_fit`` and ``_predict``.

    Class attributes
    ----------------
    name : registry name (lower-case kebab-case).
    label : the paper's label.
    designs : designs the method applies to (``"crt"``, ``"multisite"``).
    has_intervals : whether ``predict`` returns intervals (natively or by bootstrap).
    library : the Python library doing the numerical work.

    After ``fit``, ``fit_note`` is one line for the fit log about a choice the fit made from the
    data (e.g. the LMM's selected spline terms); empty by default.
    """

    name: str = ""
    label: str = ""
    designs: tuple[str, ...] = ("crt", "multisite")
    has_intervals: bool = False
    library: str = "numpy"
    fit_note: str = ""

    def __init__(self, random_state: int | None = None):
        self.random_state = random_state

    def predict_outcome(self, train: TrialData) -> OutcomePrediction:
        """Marginal and conditional outcome predictions for the training rows (diagnostics).

        Implemented by the methods whose model has an explicit cluster effect to switch on and
        off (the LMM and the BART family); others raise NotImplementedError.
        """
        raise NotImplementedError(f"method '{self.name}' does not predict outcomes")

    # sklearn-like parameter handling -------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p not in ("self", "random_state")
                and sig.parameters[p].kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]

    @classmethod
    def default_params(cls) -> dict:
        sig = inspect.signature(cls.__init__)
        return {p: sig.parameters[p].default for p in cls.param_names()}

    def _set_params(self, values: dict) -> None:
        """Store every hyperparameter under its own name (call with ``locals()`` in ``__init__``)."""
        for k in self.param_names():
            setattr(self, k, values[k])

    def get_params(self) -> dict:
        return {p: getattr(self, p) for p in self.param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # public API ----------------------------------------------------------------------------
    def fit(self, train: TrialData) -> "Estimator":
        if train.design not in self.designs:
            raise MethodError(
                f"method '{self.name}' is for design(s) {self.designs}; {train.name} is '{train.design}'")
        self._fit(train)
        self.fitted_ = True
        return self

    def predict(self, test: TrialData) -> CateResult:
        if not getattr(self, "fitted_", False):
            raise MethodError(f"method '{self.name}': call fit() before predict()")
        return self._predict(test)

    def _fit(self, train: TrialData) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, test: TrialData) -> CateResult:  # pragma: no cover - abstract
        raise NotImplementedError
