"""The CRT scenario battery: trials every CATE estimator must handle honestly.

Each scenario is a two-arm cluster-randomized trial with exact 1:1 allocation of clusters, total
outcome variance about 1, and a known CATE per row. The battery is the yardstick of the CRT
estimators: no invented heterogeneity under the null, cluster-level effects not swallowed by the
random intercept, intervals that cover, no crash on small, unbalanced trials.

Model (clusters i, individuals j)::

    X1, X2 ~ N(0, 1), X3 ~ Bernoulli(0.5), X4 ~ Uniform(-1, 1)      (individual)
    V1 ~ N(0, 1), V2 ~ Bernoulli(0.5)                                (cluster)
    f0 = 0.5 X1 - 0.3 X2 + 0.3 X3 + 0.3 V1                           (Var f0 ≈ 0.45)
    Y  = f0 + A tau + b_i + e_ij,   b ~ N(0, 0.55 icc),  e ~ N(0, 0.55 (1 - icc))

so Var(Y | A) ≈ 1 when tau is constant. Scenarios (``SCENARIOS``):

========== ======================================================== ===== ========= ======
name       tau                                                      icc   clusters  sizes
========== ======================================================== ===== ========= ======
null       0                                                        0.2   40        5-25
cluster    0.5 + 0.8 V1 (cluster-level modifier only; SD 0.8)       0.2   40        5-25
linear     0.5 + 0.5 X1 - 0.25 X3 + 0.5 V2                          0.2   40        5-25
nonlinear  0.5 + 0.5 1{X2 > 0} + 0.5 sin(pi X4) (individual)        0.2   40        5-25
small      0.5 + 0.5 X1 - 0.25 X3 + 0.5 V2                          0.2   10        3-80
icc3       0.5 + 0.5 X1 - 0.25 X3 + 0.5 V2                          0.3   40        5-25
noise      0.5 + 0.5 X1, plus pure-noise covariates Z1, Z2 (indiv.) 0.2   40        5-25
           and W1 (cluster)
cluster20  0.5 + 0.8 V1 (as ``cluster``)                            0.2   20        1-40
========== ======================================================== ===== ========= ======

``cluster20`` is the hard case for tests of heterogeneity: a cluster-level modifier seen through 10
clusters per arm, some of them singletons, so a method that shrinks toward the ATE when the
heterogeneity is not detected must still give intervals that cover (no bound is set on it).

``OTHER_DESIGNS`` holds trials of other shapes, run by name only (``--scenarios tiny,null20``): 6
clusters, clusters of 1-3, no effect in 20 clusters, a binary cluster-level modifier, 15 clusters
(7 treated), ICC 0.05, 2:1 allocation and 80 clusters of 20-40.

The metrics are computed on the training rows (the trial being analysed), against the true CATE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from clusterhte.data.trial import TrialData


@dataclass(frozen=True)
class Scenario:
    name: str
    tau: str
    icc: float = 0.2
    n_clusters: int = 40
    size_lo: int = 5
    size_hi: int = 25
    noise_covariates: bool = False
    description: str = ""
    treated: int | None = None          # treated clusters; None = half (J // 2)

    @property
    def n_treated(self) -> int:
        return self.n_clusters // 2 if self.treated is None else int(self.treated)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("null", "zero", description="no effect anywhere (tau = 0)"),
    Scenario("cluster", "cluster", description="cluster-covariate modifier only (tau = 0.5 + 0.8 V1)"),
    Scenario("linear", "linear", description="linear individual and cluster modifiers"),
    Scenario("nonlinear", "nonlinear", description="nonlinear individual modifiers"),
    Scenario("small", "linear", n_clusters=10, size_lo=3, size_hi=80,
             description="10 clusters (5 per arm), sizes 3-80"),
    Scenario("icc3", "linear", icc=0.3, description="ICC 0.3"),
    Scenario("noise", "x1", noise_covariates=True,
             description="tau = 0.5 + 0.5 X1 with three pure-noise covariates"),
    Scenario("cluster20", "cluster", n_clusters=20, size_lo=1, size_hi=40,
             description="cluster-covariate modifier in 20 clusters of sizes 1-40"),
]}


# Designs beyond the battery, by name only (not in the default run, no bound is tested on them):
# what an estimator does on trials of other shapes. ``tiny`` leaves no between-cluster df for the
# LMM and GAMM and too few clusters per arm for the causal forest, which refuse it with a message.
OTHER_DESIGNS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("tiny", "linear", n_clusters=6, size_lo=2, size_hi=10, description="6 clusters (3 per arm), sizes 2-10"),
    Scenario("singletons", "linear", n_clusters=30, size_lo=1, size_hi=3, description="30 clusters of 1-3"),
    Scenario("null20", "zero", n_clusters=20, size_lo=5, size_hi=15, description="no effect, 20 clusters of 5-15"),
    Scenario("cluster_binary", "cluster_binary", n_clusters=30, size_lo=10, size_hi=30,
             description="binary cluster-level modifier (tau = 0.3 + 0.6 V2), 30 clusters of 10-30"),
    Scenario("odd15", "linear", n_clusters=15, size_lo=10, size_hi=30, description="15 clusters (7 treated)"),
    Scenario("icc05", "cluster", icc=0.05, n_clusters=40, size_lo=20, size_hi=20,
             description="cluster-level modifier, ICC 0.05, 40 clusters of 20"),
    Scenario("two_to_one", "linear", n_clusters=36, treated=24, description="2:1 allocation, 24 of 36 clusters treated"),
    Scenario("large", "linear", n_clusters=80, size_lo=20, size_hi=40, description="80 clusters of 20-40"),
]}


def get_scenario(name: str) -> Scenario:
    """The battery scenario or other design called ``name``; a clear error for any other name."""
    if name in SCENARIOS:
        return SCENARIOS[name]
    if name in OTHER_DESIGNS:
        return OTHER_DESIGNS[name]
    raise ValueError(f"unknown battery scenario {name!r}; scenarios: {', '.join(SCENARIOS)}; "
                     f"other designs: {', '.join(OTHER_DESIGNS)}")


def tau_of(kind: str, X: dict[str, np.ndarray]) -> np.ndarray:
    """True CATE ``kind`` at covariates ``X``."""
    if kind == "zero":
        return np.zeros_like(X["X1"])
    if kind == "cluster":
        return 0.5 + 0.8 * X["V1"]
    if kind == "linear":
        return 0.5 + 0.5 * X["X1"] - 0.25 * X["X3"] + 0.5 * X["V2"]
    if kind == "nonlinear":
        return 0.5 + 0.5 * (X["X2"] > 0) + 0.5 * np.sin(np.pi * X["X4"])
    if kind == "x1":
        return 0.5 + 0.5 * X["X1"]
    if kind == "cluster_binary":
        return 0.3 + 0.6 * X["V2"]
    raise ValueError(f"unknown tau kind {kind!r}")


def simulate(scenario: str | Scenario, rng: np.random.Generator) -> tuple[TrialData, np.ndarray]:
    """One trial of ``scenario``: the validated :class:`TrialData` and the true CATE per row."""
    sc = get_scenario(scenario) if isinstance(scenario, str) else scenario
    J = sc.n_clusters
    sizes = rng.integers(sc.size_lo, sc.size_hi + 1, size=J)
    n = int(sizes.sum())
    cl = np.repeat(np.arange(J), sizes)
    A = np.zeros(J, dtype=np.int64)
    A[rng.permutation(J)[: sc.n_treated]] = 1
    V1 = rng.normal(size=J)
    V2 = rng.binomial(1, 0.5, J).astype(float)
    while np.ptp(V2) == 0:  # a constant covariate is no covariate (chance 2^(1-J)); redraw it
        V2 = rng.binomial(1, 0.5, J).astype(float)
    X = {"X1": rng.normal(size=n), "X2": rng.normal(size=n),
         "X3": rng.binomial(1, 0.5, n).astype(float), "X4": rng.uniform(-1, 1, n),
         "V1": V1[cl], "V2": V2[cl]}
    indiv, clus = ["X1", "X2", "X3", "X4"], ["V1", "V2"]
    if sc.noise_covariates:
        X["Z1"], X["Z2"] = rng.normal(size=n), rng.binomial(1, 0.5, n).astype(float)
        X["W1"] = rng.normal(size=J)[cl]
        indiv += ["Z1", "Z2"]
        clus += ["W1"]
    f0 = 0.5 * X["X1"] - 0.3 * X["X2"] + 0.3 * X["X3"] + 0.3 * X["V1"]
    tau = tau_of(sc.tau, X)
    b = rng.normal(0.0, np.sqrt(0.55 * sc.icc), J)
    e = rng.normal(0.0, np.sqrt(0.55 * (1 - sc.icc)), n)
    a = A[cl]
    y = f0 + a * tau + b[cl] + e
    frame = pd.DataFrame({"cluster": cl, "treatment": a, "outcome": y, **{k: X[k] for k in indiv + clus}})
    trial = TrialData(frame, "crt", tuple(indiv), tuple(clus), (), name=f"battery {sc.name}").validate()
    return trial, tau


def metrics(tau: np.ndarray, point: np.ndarray, lower: np.ndarray, upper: np.ndarray,
            ate: tuple[float, float, float]) -> dict[str, float]:
    """Battery metrics of one fit: PEHE, pointwise coverage and width, CATE SD and correlation with
    the truth, share of intervals containing 0, ATE error and ATE coverage."""
    tau, point = np.asarray(tau, float), np.asarray(point, float)
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    true_ate = float(tau.mean())
    est, lo, hi = ate
    sd_true = float(tau.std())
    corr = float(np.corrcoef(point, tau)[0, 1]) if sd_true > 0 and point.std() > 0 else np.nan
    return {
        "pehe": float(np.sqrt(np.mean((point - tau) ** 2))),
        "coverage": float(np.mean((lower <= tau) & (tau <= upper))),
        "width": float(np.mean(upper - lower)),
        "cate_sd": float(point.std()),
        "true_sd": sd_true,
        "corr": corr,
        "zero_in_interval": float(np.mean((lower <= 0) & (0 <= upper))),
        "ate": float(est),
        "ate_error": float(est - true_ate),
        "ate_covered": float(lo <= true_ate <= hi) if np.isfinite(lo) and np.isfinite(hi) else np.nan,
    }
