"""CF: cross-fitting by whole clusters, the centred moment identity, acceptance on the shared
fixtures, cluster half-sampling intervals (odd arms, Monte Carlo debiasing), small trials,
reproducibility and errors."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from clusterhte.data.trial import TrialData
from clusterhte.methods import get
from clusterhte.methods.base import MethodError
from clusterhte.folds import cluster_strata
from clusterhte.methods.causal_forest import (CausalForest, ClusterHonestForest, cluster_folds,
                                             cluster_half_sample, cluster_tree_draws, debiased_variance,
                                             half_sample_sizes)
from clusterhte.simulate.battery import metrics, simulate

from conftest import make_crt, small_multisite

QUICK = dict(n_estimators=200, yhat_trees=100, yhat_folds=3, n_half_samples=4, half_sample_trees=10)
ROW = dict(n_estimators=200, yhat_trees=100, yhat_folds=3, n_half_samples=0, subsample="row")


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
    yt = td.outcome - cf_linear.yhat_
    pooled = np.sum((w - w.mean()) * (yt - yt.mean())) / np.sum((w - w.mean()) ** 2)
    assert abs(cf_linear.predict(td).point.mean() - pooled) < 0.15


def test_constant_effect(crt_constant):
    td, _ = crt_constant
    res = CausalForest(**QUICK, random_state=2).fit(td).predict(td)
    assert abs(res.point.mean() - 1.0) < 0.3


def test_linear_modifier_tracked(cf_linear, crt_linear):
    td, tau = crt_linear
    res = cf_linear.predict(td)
    assert np.all(np.isfinite(res.point))
    assert np.corrcoef(res.point, tau)[0, 1] >= 0.8
    assert "half-sampling" in res.info["interval"]
    assert np.all(res.lower < res.point) and np.all(res.point < res.upper)


def test_row_subsampling_is_econml_with_its_intervals(crt_linear):
    """subsample = 'row' is econml's CausalForest (the former behaviour) with its little bags."""
    from econml.grf import CausalForest as EconCF

    td, tau = crt_linear
    est = CausalForest(**ROW, random_state=1).fit(td)
    assert isinstance(est.forest_, EconCF)
    res = est.predict(td)
    assert np.corrcoef(res.point, tau)[0, 1] >= 0.8
    assert "not cluster-robust" in res.info["interval"]
    assert np.all(res.lower <= res.point) and np.all(res.point <= res.upper)


def test_half_samples_take_half_of_each_arm_without_replacement(crt_linear):
    td, _ = crt_linear
    arm = td.frame.groupby("cluster")["treatment"].first().to_numpy()
    sizes = []
    for seed in range(40):
        rows = cluster_half_sample(td, np.random.default_rng(seed))
        kept = np.unique(td.cluster_codes[rows])
        assert np.all(np.isin(td.cluster_codes, kept) == rows)  # whole clusters
        sizes += [arm[kept].sum(), (1 - arm[kept]).sum()]
    # 15 clusters per arm (odd): 7 or 8 kept, both occurring
    assert set(sizes) == {7, 8}


def test_odd_arm_half_sample_sizes_make_the_variance_factor_one():
    """E[(M - r) / r] = 1 for every arm size, exactly (the probabilities) and by simulation."""
    for M in range(2, 16):
        if M % 2 == 0:
            assert half_sample_sizes(M, np.random.default_rng(0)) == M // 2
            continue
        p = (M - 1) / (2 * M)
        r1, r2 = (M - 1) / 2, (M + 1) / 2
        assert p * (M - r1) / r1 + (1 - p) * (M - r2) / r2 == pytest.approx(1.0, abs=1e-12)
        rng = np.random.default_rng(M)
        r = np.array([half_sample_sizes(M, rng) for _ in range(4000)])
        assert set(r) == {r1, r2}
        assert abs(np.mean(r == r1) - p) < 4 * np.sqrt(p * (1 - p) / 4000)
    with pytest.raises(ValueError):
        half_sample_sizes(1, np.random.default_rng(0))


def test_half_sample_variance_of_a_linear_statistic_is_unbiased_with_odd_arms():
    """Known answer: for the difference of arm means of cluster values, the variance over
    half-samples equals s1^2/M1 + s0^2/M0 (the variance estimate of the full-sample statistic),
    here with 5 treated and 6 control clusters (different parities), where no single
    delete-d factor can be right."""
    rng = np.random.default_rng(5)
    M1, M0 = 5, 6
    J = M1 + M0
    sizes = np.array([3, 80, 5, 40, 7, 3, 60, 4, 20, 9, 11])
    codes = np.repeat(np.arange(J), sizes)
    arm = np.r_[np.ones(M1), np.zeros(M0)]
    v = rng.normal(size=J) * 2 + arm
    td = SimpleNamespace(cluster_codes=codes, treatment=arm[codes])   # what cluster_half_sample reads
    s1, s0 = v[arm == 1].var(ddof=1), v[arm == 0].var(ddof=1)
    target = s1 / M1 + s0 / M0
    draws = []
    hs = np.random.default_rng(6)
    for _ in range(8000):
        kept = np.unique(codes[cluster_half_sample(td, hs)])
        k1, k0 = kept[arm[kept] == 1], kept[arm[kept] == 0]
        draws.append(v[k1].mean() - v[k0].mean())
    # Monte Carlo SE of a variance from 8000 draws is about var * sqrt(2/8000) (~1.6 %); allow 6 %
    assert np.var(draws) == pytest.approx(target, rel=0.06)
    # the old rule (keep floor(M/2) per arm, one factor (M - d)/d) is biased here: its expectation
    # is (M - d)/d * sum_a s_a^2 d_a / (r_a M_a)
    r1, r0 = M1 // 2, M0 // 2
    d = J - r1 - r0
    old = (J - d) / d * (s1 * (M1 - r1) / (r1 * M1) + s0 * (M0 - r0) / (r0 * M0))
    assert abs(old / target - 1) > 0.05


def test_debiased_variance():
    between = np.array([1.0, 1.0, 1.0, 0.2])
    noise = np.array([0.0, 0.5, 1.0, 0.0])
    v = debiased_variance(between, noise, 50)
    np.testing.assert_allclose(v[[0, 3]], between[[0, 3]], rtol=1e-6)   # no noise: unchanged
    assert 0.45 < v[1] < 0.6                                             # about between - noise
    assert 0 < v[2] < 0.5                                                # all noise: small but positive


def test_small_trials_run_with_four_clusters_per_arm_and_unequal_sizes():
    """10 clusters (5 per arm) of sizes 3-80 (the battery's small scenario) and 8 clusters with
    4 per arm: no crash (the old Y.hat folds could be empty), finite intervals around the point."""
    kw = dict(n_estimators=60, yhat_trees=20, yhat_folds=5, n_half_samples=4, half_sample_trees=10)
    for seed in range(4):
        td, tau = simulate("small", np.random.default_rng(seed))
        if seed >= 2:   # drop one cluster per arm: 4 treated, 4 control
            arm = td.frame.groupby("cluster")["treatment"].first()
            drop = [arm[arm == 1].index[0], arm[arm == 0].index[0]]
            td = td.subset(~td.frame["cluster"].isin(drop).to_numpy())
            tau = tau[~np.isin(simulate("small", np.random.default_rng(seed))[0].frame["cluster"], drop)]
        res = CausalForest(**kw, random_state=seed).fit(td).predict(td)
        assert np.all(np.isfinite(res.point)) and np.all(np.isfinite(res.lower)) and np.all(np.isfinite(res.upper))
        assert np.all(res.lower < res.point) and np.all(res.point < res.upper)
        _, lo, hi = res.ate()
        assert lo < hi


def test_half_sampling_intervals_scale_with_clusters_and_match_lmm_ate_se():
    kw = dict(n_estimators=100, yhat_trees=30, yhat_folds=3, n_half_samples=24, half_sample_trees=20)
    widths = []
    for M in (40, 12):
        td, _ = make_crt(41, "linear", M=M)
        res = CausalForest(**kw, random_state=3).fit(td).predict(td)
        assert "half-sampling" in res.info["interval"] and res.draws is None
        assert np.all(res.lower < res.point) and np.all(res.point < res.upper)
        est, lo, hi = res.ate()
        assert lo < est < hi
        widths.append((np.mean(res.upper - res.lower), hi - lo))
        if M == 40:
            f = td.frame
            lmm = smf.mixedlm("outcome ~ treatment + X1 + X2 + X3 + V1", f, groups=f["cluster"]).fit()
            # the forest's ATE is less efficient than the correctly specified LMM: over 8
            # replicates of this design its SD was 0.235 against the LMM's SE 0.123
            ratio = (hi - lo) / (2 * 1.96 * lmm.bse["treatment"])
            assert 1.0 < ratio < 3.0, ratio
    # the ATE is root-M estimable: expected width ratio about sqrt(40/12) = 1.8 (the variance
    # estimate has 23 df, SE ~ 15 %); pointwise forest intervals shrink more slowly with M
    # (fixed leaf size), but must shrink
    print(widths)
    assert widths[1][1] > 1.3 * widths[0][1]
    assert widths[1][0] > widths[0][0]


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
        CausalForest(n_estimators=101, n_half_samples=0, subsample="row").fit(td)
    with pytest.raises(MethodError, match="subsample"):
        CausalForest(subsample="clusters").fit(td)
    with pytest.raises(MethodError, match="honest"):
        CausalForest(honest=False).fit(td)
    with pytest.raises(MethodError, match="max_samples"):
        CausalForest(max_samples=float("nan")).fit(td)
    with pytest.raises(MethodError, match="n_half_samples"):
        CausalForest(n_half_samples=1).fit(td)
    with pytest.raises(MethodError, match="half_sample_trees"):
        CausalForest(half_sample_trees=15).fit(td)
    one_arm_short = td.subset(td.frame["cluster"].isin([0, 1, 2, 3] + [c for c in range(30)
                              if td.frame.loc[td.frame["cluster"] == c, "treatment"].iloc[0] == 0]).to_numpy())
    keep_one_treated = one_arm_short.frame.groupby("cluster")["treatment"].first()
    if keep_one_treated.sum() >= 2:
        treated = keep_one_treated[keep_one_treated == 1].index[1:]
        one_arm_short = one_arm_short.subset(~one_arm_short.frame["cluster"].isin(treated).to_numpy())
    with pytest.raises(MethodError, match="at least 2 per arm"):
        CausalForest(**QUICK).fit(one_arm_short)


def test_three_clusters_per_arm_is_refused_with_the_reason():
    """6 clusters (3 per arm): a half-sample keeps 1 or 2 clusters of an arm, and an honest tree
    needs 2, so the half-sample intervals cannot be formed; the fit says so before any work (it
    used to fail at random inside a refit)."""
    from dataclasses import replace

    from clusterhte import seeds
    from clusterhte.simulate.battery import SCENARIOS, simulate

    td, _ = simulate(replace(SCENARIOS["linear"], n_clusters=6, size_lo=2, size_hi=10), seeds.rng(7, "cf-six"))
    with pytest.raises(MethodError, match="3 treated and 3 control clusters; the half-sample intervals need at least 4"):
        CausalForest(**QUICK).fit(td)


def test_defaults():
    d = CausalForest.default_params()
    assert (d["n_estimators"], d["min_samples_leaf"], d["honest"], d["n_threads"]) == (2000, 3, True, 1)
    assert d["subsample"] == "cluster"


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


def test_width_does_not_depend_on_refit_forest_size():
    """The refit forests' Monte Carlo noise is removed: with the same half-samples (same seed),
    refits of 10 or 100 trees give the same interval width up to Monte Carlo error, while the
    raw between-refit variance of the 10-tree refits is clearly larger."""
    td, _ = make_crt(21, "linear", M=20, size=15)
    kw = dict(n_estimators=200, yhat_trees=30, yhat_folds=3, n_half_samples=12)
    small = CausalForest(**kw, half_sample_trees=10, random_state=4).fit(td)
    big = CausalForest(**kw, half_sample_trees=100, random_state=4).fit(td)
    ws, wb = (np.mean(np.asarray(e.predict(td).info["se"])) for e in (small, big))
    raw = [np.mean(np.var(np.column_stack([f.predict(td.X()).ravel() for f in e.half_]), axis=1, ddof=1))
           for e in (small, big)]
    print(f"\nse 10 trees {ws:.3f}, 100 trees {wb:.3f}; raw between-variance {raw[0]:.3f} vs {raw[1]:.3f}")
    assert raw[0] > 1.2 * raw[1]
    assert 0.8 < ws / wb < 1.25


def _battery_cf(scenario: str, reps: int, **kw) -> dict:
    rows = []
    for r in range(reps):
        td, tau = simulate(scenario, np.random.default_rng(700 + r))
        res = CausalForest(**kw, random_state=r).fit(td).predict(td)
        rows.append(metrics(tau, res.point, res.lower, res.upper, res.ate()))
    return {k: float(np.mean([m[k] for m in rows])) for k in ("coverage", "zero_in_interval", "cate_sd", "pehe", "width")}


QUICK_HALF = dict(n_estimators=200, yhat_trees=100, yhat_folds=3, n_half_samples=20, half_sample_trees=20)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["linear", "nonlinear", "null", "small"])
def test_battery_coverage_20_replicates(scenario):
    """Quick (CI) settings, 20 replicates: pointwise coverage in [0.85, 0.995] on linear and
    nonlinear; under the null CATE SD < 0.25 and 0 inside >= 90 % of the intervals; small runs."""
    out = _battery_cf(scenario, 20, **QUICK_HALF)
    print(f"\ncf {scenario} (20 reps, quick settings): {out}")
    if scenario == "null":
        assert out["cate_sd"] < 0.25 and out["zero_in_interval"] >= 0.9
    elif scenario != "small":
        assert 0.85 <= out["coverage"] <= 0.995


@pytest.mark.slow
def test_refit_size_does_not_change_coverage_paper_scale():
    """Paper-scale check of the speed-up: 100-tree refits (the default) against 500-tree refits
    (the old default) on 6 replicates of the linear scenario: mean width within 10 %."""
    w = {100: [], 500: []}
    cov = {100: [], 500: []}
    for r in range(6):
        td, tau = simulate("linear", np.random.default_rng(900 + r))
        for T in w:
            res = CausalForest(half_sample_trees=T, random_state=r).fit(td).predict(td)
            w[T].append(np.mean(res.upper - res.lower))
            cov[T].append(np.mean((res.lower <= tau) & (tau <= res.upper)))
    print(f"\nwidth 100-tree refits {np.mean(w[100]):.3f} (coverage {np.mean(cov[100]):.3f}), "
          f"500-tree refits {np.mean(w[500]):.3f} (coverage {np.mean(cov[500]):.3f})")
    assert abs(np.mean(w[100]) / np.mean(w[500]) - 1) < 0.1


# --------------------------------------------------------------------------- cluster-honest trees
def test_cluster_tree_draws_take_whole_clusters_per_arm_and_split_them():
    strata = np.r_[np.ones(20, int), np.zeros(5, int)]
    grow, est = cluster_tree_draws(strata, 300, 0.5, np.random.default_rng(0))
    assert grow.shape == est.shape == (300, 25)
    assert not np.any(grow & est)
    # 20 treated: 10 drawn, 5 grow / 5 estimate; 5 control: max(2, floor(2.5)) = 2 drawn, 1 / 1
    np.testing.assert_array_equal(grow[:, :20].sum(1), 5)
    np.testing.assert_array_equal(est[:, :20].sum(1), 5)
    np.testing.assert_array_equal(grow[:, 20:].sum(1), 1)
    np.testing.assert_array_equal(est[:, 20:].sum(1), 1)
    # every cluster is drawn about equally often (each tree: a uniform subset of its arm)
    drawn = (grow | est)[:, :20].mean(0)
    assert np.all(np.abs(drawn - 0.5) < 4 * np.sqrt(0.25 / 300))
    assert len({tuple(r) for r in grow}) > 250                            # trees differ
    # a half-sample forest (fraction 1): all clusters of the arm, ceil / floor halves
    g, e = cluster_tree_draws(np.r_[np.ones(3, int), np.zeros(2, int)], 50, 1.0, np.random.default_rng(1))
    np.testing.assert_array_equal(g[:, :3].sum(1), 2)
    np.testing.assert_array_equal(e[:, :3].sum(1), 1)
    np.testing.assert_array_equal((g | e).sum(1), 5)
    with pytest.raises(ValueError, match="2 clusters per arm"):
        cluster_tree_draws(np.r_[1, 0, 0], 5, 0.5, np.random.default_rng(0))


def _honest_forest_data(seed=3):
    td, _ = simulate("linear", np.random.default_rng(seed))
    codes, A = td.cluster_codes, td.treatment
    y = td.outcome - td.outcome.mean()
    return td.X(), A - 0.5, y, codes, cluster_strata(codes, A)


def test_cluster_honest_leaves_are_means_over_the_estimation_clusters_only():
    """Known answer: each tree's leaf moments are the means of y (w; 1) and (w; 1)(w; 1)' over the
    rows of its *estimation* clusters in that leaf (computed here with bincount); the outcomes of
    the clusters the tree was grown on never enter them."""
    X, w, y, codes, strata = _honest_forest_data()
    f = ClusterHonestForest(6, 3, 0.5, random_state=11).fit(X, w, y, codes, strata)
    grow, est = cluster_tree_draws(strata, 6, 0.5, np.random.default_rng(11))   # the same draws
    design = np.column_stack([w, np.ones_like(w)])
    moments = np.column_stack([y[:, None] * design, (design[:, :, None] * design[:, None, :]).reshape(-1, 4)])
    Xc = np.ascontiguousarray(X, dtype=np.float64)
    for t, tree in enumerate(f.estimators_):
        assert tree.n_leaves > 4
        leaf = tree.apply(Xc)
        rows = est[t][codes]
        n_leaf = np.bincount(leaf[rows], minlength=tree.node_count)
        means = np.column_stack([np.bincount(leaf[rows], weights=moments[rows, k], minlength=tree.node_count)
                                 for k in range(6)]) / np.maximum(n_leaf, 1)[:, None]
        alpha, jac = tree.predict_precond_and_jac(Xc)
        np.testing.assert_allclose(np.column_stack([alpha, jac]), means[leaf], rtol=1e-9, atol=1e-12)
        assert np.all(n_leaf[np.unique(leaf)] >= 3)                        # min_samples_leaf on the estimation half
        assert not np.any(grow[t][codes] & rows)


def test_forest_without_splits_is_the_closed_form_pooled_moment():
    """Leaves larger than the data: every tree is one leaf, and the forest solves the 2 x 2 moment
    system averaged over trees of the estimation-cluster means (closed form)."""
    X, w, y, codes, strata = _honest_forest_data(4)
    T = 40
    f = ClusterHonestForest(T, 10_000, 0.5, random_state=5).fit(X, w, y, codes, strata)
    _, est = cluster_tree_draws(strata, T, 0.5, np.random.default_rng(5))
    a = np.zeros(2)
    J = np.zeros((2, 2))
    for t in range(T):
        r = est[t][codes]
        d = np.column_stack([w[r], np.ones(r.sum())])
        a += d.T @ y[r] / r.sum()
        J += d.T @ d / r.sum()
    tau = np.linalg.solve(J, a)[0]
    pred = f.predict(X[:7])
    np.testing.assert_allclose(pred, tau, rtol=1e-10)
    alpha, jac = f.predict_alpha_and_jac(X[:3], slice=np.arange(T // 2))
    assert alpha.shape == (3, 2) and jac.shape == (3, 2, 2)
    with pytest.raises(ValueError, match="covariates"):
        f.predict(X[:, :3])


def test_null_effect_cluster_honesty_removes_invented_heterogeneity():
    """Under tau = 0 the cluster-honest forest's CATEs vary less than the row-subsampled one's on
    the same trial (same Y.hat and half-samples), and its intervals contain 0. (20-replicate
    version: the slow test below and tests/test_battery.py.)"""
    kw = dict(n_estimators=200, yhat_trees=50, yhat_folds=3, n_half_samples=10, half_sample_trees=10)
    cl = _battery_cf("null", 1, **kw)
    row = _battery_cf("null", 1, **kw, subsample="row")
    print(f"\nnull, 1 trial: cluster {cl}\nrow {row}")
    assert cl["cate_sd"] < 0.25 and cl["zero_in_interval"] >= 0.9
    assert cl["cate_sd"] < 0.85 * row["cate_sd"]


@pytest.mark.slow
def test_cluster_against_row_subsampling_20_replicates():
    """The measured reason for subsample = 'cluster' (issue 11), quick settings, 20 replicates."""
    for sc in ("null", "nonlinear"):
        cl = _battery_cf(sc, 20, **QUICK_HALF)
        row = _battery_cf(sc, 20, **QUICK_HALF, subsample="row")
        print(f"\n{sc}: cluster {cl}\n{sc}: row {row}")
        assert cl["pehe"] < row["pehe"]
        if sc == "null":
            assert cl["cate_sd"] < 0.25 and cl["cate_sd"] < row["cate_sd"]
            assert cl["zero_in_interval"] >= 0.9


def test_threads_do_not_change_the_forest():
    X, w, y, codes, strata = _honest_forest_data(6)
    one = ClusterHonestForest(16, 3, 0.5, n_jobs=1, random_state=2).fit(X, w, y, codes, strata)
    two = ClusterHonestForest(16, 3, 0.5, n_jobs=2, random_state=2).fit(X, w, y, codes, strata)
    np.testing.assert_array_equal(one.predict(X), two.predict(X))


def test_w_hat_is_the_share_of_treated_clusters_in_an_unequal_allocation():
    """2:1 allocation (24 of 36 clusters treated, unequal sizes): W.hat is 2/3, not the 1:1 value
    0.5, and the mean CATE recovers the ATE."""
    rng = np.random.default_rng(3)
    M = 36
    sizes = rng.integers(8, 25, M)
    cl = np.repeat(np.arange(M), sizes)
    n = cl.size
    A = np.zeros(M)
    A[rng.permutation(M)[:24]] = 1
    X1, V1 = rng.normal(size=n), rng.normal(size=M)
    tau = 1 + 0.5 * X1
    y = 0.5 * X1 + 0.5 * V1[cl] + A[cl] * tau + rng.normal(0, 0.2, M)[cl] + rng.normal(0, 0.5, n)
    td = TrialData(pd.DataFrame({"cluster": cl, "treatment": A[cl], "outcome": y, "X1": X1, "V1": V1[cl]}),
                   "crt", ("X1",), ("V1",), (), name="two-to-one").validate()
    cf = CausalForest(**QUICK, random_state=1).fit(td)
    assert cf.w_hat_ == pytest.approx(24 / 36)
    res = cf.predict(td)
    lo, hi = res.info["ate_interval"]
    assert abs(res.point.mean() - tau.mean()) < 0.15 and lo < tau.mean() < hi


def test_no_half_samples_gives_the_same_point_estimates_without_intervals(crt_linear):
    """n_half_samples = 0 with the cluster-honest forest (the validation's cross-fits): the same
    CATEs as the fit with half-samples, no interval (NaN), and no 4-clusters-per-arm minimum."""
    td, _ = crt_linear
    full = CausalForest(**QUICK, random_state=3).fit(td).predict(td)
    point = CausalForest(**{**QUICK, "n_half_samples": 0}, random_state=3).fit(td).predict(td)
    np.testing.assert_array_equal(point.point, full.point)
    assert np.isnan(point.lower).all() and np.isnan(point.upper).all()
    assert "none" in point.info["interval"]
    treated = td.frame.loc[td.frame["treatment"] == 1, "cluster"].unique()
    three = td.subset(~td.frame["cluster"].isin(treated[:-3]))          # 3 treated clusters left
    assert three.frame.loc[three.frame["treatment"] == 1, "cluster"].nunique() == 3
    with pytest.raises(MethodError, match="at least 4 per arm"):
        CausalForest(**QUICK, random_state=3).fit(three)
    assert CausalForest(**{**QUICK, "n_half_samples": 0}, random_state=3).fit(three).predict(three).point.size == three.n
