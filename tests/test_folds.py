"""Cluster folds: whole clusters, no empty fold, every arm in every fold."""

import numpy as np
import pytest

from clusterhte.folds import cluster_folds, cluster_strata, n_folds


def _small_crt():
    # 10 clusters, 5 per arm, very unequal sizes 3..80
    sizes = np.array([3, 80, 5, 40, 7, 3, 60, 4, 20, 9])
    codes = np.repeat(np.arange(10), sizes)
    arm = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    return codes, arm[codes]


def test_folds_keep_clusters_whole_and_every_arm():
    codes, a = _small_crt()
    strata = cluster_strata(codes, a)
    assert list(strata) == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    k = n_folds(10, 10, strata)
    assert k == 5
    for seed in range(50):
        fold = cluster_folds(codes, k, np.random.default_rng(seed), strata)
        for c in range(10):
            assert np.unique(fold[codes == c]).size == 1
        for f in range(k):
            assert set(a[fold == f]) == {0, 1}


def test_n_folds_caps_and_rejects():
    assert n_folds(40, 5) == 5
    assert n_folds(3, 5) == 3
    assert n_folds(8, 5, np.array([0, 0, 0, 1, 1, 1, 1, 1])) == 3
    with pytest.raises(ValueError, match="at least 2 clusters per arm"):
        n_folds(3, 5, np.array([0, 1, 1]))
    with pytest.raises(ValueError):
        cluster_folds(np.arange(3), 4, np.random.default_rng(0))
