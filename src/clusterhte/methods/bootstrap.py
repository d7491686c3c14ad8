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
import pandas as pd

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
