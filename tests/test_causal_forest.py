"""CF: cross-fitting by whole clusters, the centred moment identity, acceptance on the shared
fixtures, cluster-bootstrap intervals, reproducibility and errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from clusterhte.methods import get
from clusterhte.methods.base import MethodError
from clusterhte.methods.causal_forest import CausalForest, cluster_folds, cluster_half_sample

from conftest import make_crt, small_multisite

QUICK = dict(n_estimators=200, yhat_trees=100, yhat_folds=3, n_half_samples=0)


@pytest.fixture(scope="module")
def cf_linear(crt_linear):
    td, _ = crt_linear
    return CausalForest(**QUICK, random_state=1).fit(td)


def test_registry():
    assert get("cf") is CausalForest
    assert CausalForest.designs == ("crt",) and CausalForest.library == "econml"


def test_cluster_folds_keep_clusters_whole_and_balanced():
    codes = np.repeat(np.arange(17), np.arange(17) % 4 + 2)
    fold = cluster_folds(codes, 5, np.random.default_rng(0))
    per_cluster = pd.Series(fold).groupby(codes).nunique()
    assert (per_cluster == 1).all()
    counts = np.bincount(pd.Series(fold).groupby(codes).first(), minlength=5)
    assert counts.max() - counts.min() <= 1


def test_yhat_is_cross_fitted_over_clusters(crt_linear):
    """Changing the outcomes of one fold's clusters leaves that fold's Y.hat unchanged."""
    td, _ = crt_linear
    cf = CausalForest(**QUICK)
    X, y, codes = td.X(), td.outcome, td.cluster_codes
    fold = cluster_folds(codes, 3, np.random.default_rng(4))
    a = cf._yhat(X, y, codes, seed=4)
    y2 = np.where(fold == 0, y + 100.0, y)
    b = cf._yhat(X, y2, codes, seed=4)
    np.testing.assert_array_equal(a[fold == 0], b[fold == 0])
    assert np.mean(b[fold != 0] - a[fold != 0]) > 5


def test_mean_cate_matches_centred_moment(cf_linear, crt_linear):
    """grf identity: with W~ = A - 0.5 and Y~ = Y - Y.hat, the forest's average effect is close to
    the pooled moment estimate sum(W~ Y~)/sum(W~^2) (exact for a single leaf)."""
    td, _ = crt_linear
    w = td.treatment - 0.5
    yt = td.outcome - cf_linear.fit_.yhat
    pooled = np.sum((w - w.mean()) * (yt - yt.mean())) / np.sum((w - w.mean()) ** 2)
    assert abs(cf_linear.predict(td).point.mean() - pooled) < 0.15


def test_constant_effect(crt_constant):
    td, _ = crt_constant
    res = CausalForest(**QUICK, random_state=2).fit(td).predict(td)
    assert abs(res.point.mean() - 1.0) < 0.3


def test_linear_modifier_tracked_and_econml_intervals(cf_linear, crt_linear):
    td, tau = crt_linear
    res = cf_linear.predict(td)
    assert np.all(np.isfinite(res.point))
    assert np.corrcoef(res.point, tau)[0, 1] >= 0.8
    assert "not cluster-robust" in res.info["interval"]
    assert np.all(res.lower <= res.point) and np.all(res.point <= res.upper)


def test_half_samples_take_half_of_each_arm_without_replacement(crt_linear):
    td, _ = crt_linear
    rows, d = cluster_half_sample(td, np.random.default_rng(0))
    kept = np.unique(td.cluster_codes[rows])
    assert d == 16 and len(kept) == 14
    arm = td.frame.groupby("cluster")["treatment"].first().to_numpy()
    assert arm[kept].sum() == 7  # 15 treated and 15 control clusters -> 7 of each kept
    assert np.all(np.isin(td.cluster_codes, kept) == rows)  # whole clusters


def test_half_sampling_intervals_scale_with_clusters_and_match_lmm_ate_se():
    kw = dict(n_estimators=100, yhat_trees=30, yhat_folds=3, n_half_samples=10, half_sample_trees=100)
    widths = []
    for M in (40, 12):
        td, _ = make_crt(41, "linear", M=M)
        res = CausalForest(**kw, random_state=3).fit(td).predict(td)
        assert "half-sampling" in res.info["interval"] and res.draws is None
        assert np.all(res.lower < res.point) and np.all(res.point < res.upper)
        est, lo, hi = res.ate()
        assert lo < est < hi
        widths.append(np.mean(res.upper - res.lower))
        if M == 40:
            f = td.frame
            lmm = smf.mixedlm("outcome ~ treatment + X1 + X2 + X3 + V1", f, groups=f["cluster"]).fit()
            # the forest's ATE is less efficient than the correctly specified LMM: over 8
            # replicates of this design its SD was 0.235 against the LMM's SE 0.123
            ratio = (hi - lo) / (2 * 1.96 * lmm.bse["treatment"])
            assert 1.0 < ratio < 3.0, ratio
    assert widths[1] > 1.3 * widths[0]


def test_new_clusters_and_reproducibility(cf_linear, crt_linear):
    td, _ = crt_linear
    new, _ = make_crt(98, "linear", M=4)
    new = replace(new, frame=new.frame.assign(cluster=new.frame["cluster"] + 500, outcome=np.nan))
    again = CausalForest(**QUICK, random_state=1).fit(td)
    r1, r2 = cf_linear.predict(new), again.predict(new)
    assert np.all(np.isfinite(r1.point))
    np.testing.assert_array_equal(r1.point, r2.point)
    r3 = CausalForest(**QUICK, random_state=9).fit(td).predict(new)
    assert not np.allclose(r1.point, r3.point)


def test_multisite_refused_and_bad_hyperparameters(crt_linear):
    ms = small_multisite()
    with pytest.raises(MethodError, match="cf"):
        CausalForest(**QUICK).fit(ms)
    td, _ = crt_linear
    with pytest.raises(MethodError, match="max_samples"):
        CausalForest(max_samples=0.8).fit(td)
    with pytest.raises(MethodError, match="yhat_folds"):
        CausalForest(yhat_folds=1).fit(td)
    with pytest.raises(MethodError, match="n_estimators"):
        CausalForest(n_estimators=101, n_half_samples=0).fit(td)
    with pytest.raises(MethodError, match="n_half_samples"):
        CausalForest(n_half_samples=1).fit(td)


def test_defaults():
    d = CausalForest.default_params()
    assert (d["n_estimators"], d["min_samples_leaf"], d["honest"], d["n_threads"]) == (2000, 5, True, 1)


@pytest.mark.slow
def test_half_sampling_ate_coverage():
    """Paper-scale check: the half-sampling ATE interval covers the true ATE in most replicates."""
    hits = []
    for rep in range(40):
        td, tau = make_crt(1000 + rep, "linear", M=30)
        res = CausalForest(n_estimators=500, yhat_trees=200, n_half_samples=20, half_sample_trees=300,
                           random_state=rep).fit(td).predict(td)
        _, lo, hi = res.ate()
        hits.append(lo <= tau.mean() <= hi)
    print(f"\ncf: the half-sampling ATE interval covered the true ATE in {np.mean(hits):.3f} of 40 replicates")
    assert np.mean(hits) >= 0.85
