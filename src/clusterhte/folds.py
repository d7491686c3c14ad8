"""Cluster-level sample splitting shared by every method and by the validation module.

Every cross-fitting, cross-validation, half-sampling or bootstrap step in clusterhte splits the
data by *whole clusters* (a cluster is never both fitted and held out). In a cluster-randomized
trial the clusters are also stratified by arm, so that every fold keeps treated and control
clusters. These helpers guarantee what small trials need: no empty fold, a fold count adapted to
the number of clusters, and half-samples that keep at least one cluster of each arm.
"""

from __future__ import annotations

import numpy as np


def cluster_strata(codes: np.ndarray, treatment: np.ndarray) -> np.ndarray:
    """Stratum per cluster (indexed by cluster code): 0 = all control, 1 = all treated, 2 = both
    arms (a multisite site). ``codes`` are 0..J-1 cluster codes per row."""
    codes = np.asarray(codes)
    J = int(codes.max()) + 1
    n = np.bincount(codes, minlength=J)
    share = np.bincount(codes, weights=np.asarray(treatment, dtype=float), minlength=J) / np.maximum(n, 1)
    return np.where(share >= 1, 1, np.where(share <= 0, 0, 2))


def n_folds(n_clusters: int, requested: int, strata: np.ndarray | None = None) -> int:
    """The fold count to use: ``requested`` capped so that every fold gets at least one cluster
    of every stratum (CRT: at least one treated and one control cluster per fold), and at least 2.

    Raises ValueError when fewer than 2 clusters are available in some stratum.
    """
    cap = int(n_clusters)
    if strata is not None:
        counts = np.bincount(np.asarray(strata))
        counts = counts[counts > 0]
        cap = int(counts.min())
    if cap < 2:
        raise ValueError(f"cluster folds need at least 2 clusters per arm, got {cap}")
    return int(max(2, min(int(requested), cap)))


def cluster_folds(codes: np.ndarray, k: int, rng: np.random.Generator,
                  strata: np.ndarray | None = None) -> np.ndarray:
    """Fold label (0..k-1) per row: whole clusters in each fold, and within each stratum of
    clusters (``strata``, one value per cluster code, e.g. from :func:`cluster_strata`) the
    clusters are dealt to the folds in a random order, continuing the deal across strata so that
    cluster counts stay balanced. With ``k`` no larger than the number of clusters no fold is
    empty; with ``k`` no larger than the smallest stratum every fold holds every stratum.
    """
    codes = np.asarray(codes)
    J = int(codes.max()) + 1
    k = int(k)
    if k < 1 or k > J:
        raise ValueError(f"cannot make {k} folds of {J} clusters")
    strata = np.zeros(J, dtype=int) if strata is None else np.asarray(strata)
    # random order within stratum, strata one after the other, dealt round-robin
    order = np.lexsort((rng.permutation(J), strata))
    fold_of_cluster = np.empty(J, dtype=int)
    fold_of_cluster[order] = np.arange(J) % k
    return fold_of_cluster[codes]

