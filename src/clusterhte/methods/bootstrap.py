"""Cluster bootstrap intervals for methods with no native uncertainty (MERF, MEGB, GPBoost,
mermboost) and for cluster-robust causal-forest intervals.

Clusters are resampled with replacement *within arm* (so every bootstrap trial keeps the
allocation: in a CRT the number of treated clusters is fixed), a cluster drawn twice enters as two
distinct clusters, the method is refitted, and the test-set CATEs are collected. The interval is
the percentile interval of the B bootstrap CATEs; the point estimate stays the full-data fit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from clusterhte.data.trial import TrialData


def resample_clusters(train: TrialData, rng: np.random.Generator) -> TrialData:
    """One cluster-bootstrap sample: clusters drawn with replacement within each arm.

    Arms are defined by the cluster's treated share (CRT: 0 or 1). For multisite trials, where
    every cluster has both arms, all clusters form one stratum.
    """
    codes = train.cluster_codes
    J = codes.max() + 1
    share = np.bincount(codes, weights=train.treatment, minlength=J) / np.bincount(codes, minlength=J)
    strata = np.where(share >= 1, 1, np.where(share <= 0, 0, 2))
    picked = np.concatenate([rng.choice(np.flatnonzero(strata == s), size=np.sum(strata == s), replace=True)
                             for s in np.unique(strata)])
    # rows of each picked cluster, vectorised: sort rows by cluster, then gather slices
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(J))
    sizes = np.bincount(codes, minlength=J)
    lens = sizes[picked]
    offs = np.repeat(starts[picked], lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))
    rows = order[offs]
    frame = train.frame.iloc[rows].reset_index(drop=True)
    frame["cluster"] = np.repeat(np.arange(len(picked)), lens)
    return replace(train, frame=frame)


def bootstrap_draws(fit_predict: Callable[[TrialData], np.ndarray], train: TrialData, B: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(n_test, B) matrix of CATEs from ``fit_predict`` refitted on B cluster-bootstrap samples."""
    cols = [np.asarray(fit_predict(resample_clusters(train, rng)), dtype=float) for _ in range(B)]
    return np.column_stack(cols)


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    a = (1 - level) / 2
    lo, hi = np.quantile(draws, [a, 1 - a], axis=1)
    return lo, hi


def normal_interval(point: np.ndarray, draws: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """``point ± z * SD`` of the bootstrap draws (rows x replicates), per row.

    Used for the cluster-bootstrap intervals of MERF, MEGB, GPBoost and mermboost: with the small
    numbers of refits a CRT study can afford (B = 5-200) the normal interval is steadier than
    percentiles, and it is centred at the full-data estimate, so it always contains it (a
    percentile interval of a biased learner's refits need not).
    """
    from scipy.stats import norm

    z = norm.ppf(0.5 + level / 2)
    sd = np.std(draws, axis=1, ddof=1) if draws.shape[1] > 1 else np.full(draws.shape[0], np.nan)
    return point - z * sd, point + z * sd


def bootstrap_result(point: np.ndarray, draws: np.ndarray | None, level: float = 0.95,
                     info: dict | None = None):
    """CateResult with normal cluster-bootstrap intervals for the rows and for the ATE."""
    from clusterhte.methods.base import CateResult

    info = dict(info or {})
    if draws is None or np.size(draws) == 0:
        return CateResult(point=point, info=info)
    draws = np.asarray(draws, dtype=float)
    lo, hi = normal_interval(point, draws, level)
    ate_lo, ate_hi = normal_interval(np.array([point.mean()]), draws.mean(axis=0)[None, :], level)
    info.update(n_bootstrap=draws.shape[1], interval="cluster bootstrap (normal)",
                ate_interval=(float(ate_lo[0]), float(ate_hi[0])))
    return CateResult(point=point, lower=lo, upper=hi, draws=draws, info=info)
