"""mermboost: P-spline learners, boosting to OLS, the random-intercept step, the (I - P) correction,
acceptance, bootstrap and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from clusterhte.data.trial import TrialData
from clusterhte.methods import MethodError, get, make
from clusterhte.methods.bootstrap import bootstrap_clusters, sample_of_clusters
from clusterhte.methods.mermboost import (LearnerSet, Mermboost, RandomIntercept, boost,
                                          cluster_projection)
from clusterhte.simulate.battery import metrics, simulate
from clusterhte.methods.splines import (BSplineBasis, df_of_lambda, difference_penalty, lambda_for_df,
                                        smoother_eigenvalues, sum_to_zero_constraint)
from clusterhte.mixed.reml import fit_lmm

from conftest import make_crt

QUICK = dict(mstop_max=200, n_bootstrap=0)
QUICK_BOOT = dict(mstop_max=300, n_bootstrap=20)   # config.yaml crt quick override


# ------------------------------------------------------------------------------------ splines
def test_bspline_basis_partition_of_unity_and_linear_extension():
    x = np.random.default_rng(0).uniform(-2, 3, 200)
    b = BSplineBasis(20, 3).fit(x)
    B = b.transform(x)
    assert B.shape == (200, 24)
    np.testing.assert_allclose(B.sum(axis=1), 1.0, atol=1e-12)
    # a spline with linear coefficients is the linear function, also beyond the range (extension)
    coef = np.linspace(0, 1, 24)
    xs = np.array([-5.0, -2.0, 0.0, 3.0, 8.0])
    f = b.transform(xs) @ coef
    slope = (f[3] - f[1]) / 5.0
    np.testing.assert_allclose(f, f[1] + slope * (xs + 2.0), atol=1e-10)


def test_lambda_for_df_hits_trace_definition():
    x = np.random.default_rng(1).normal(size=300)
    B = BSplineBasis(20, 3).fit(x).transform(x)
    P = difference_penalty(24, 2)
    lam = lambda_for_df(B, P, 4.0)
    S = B @ np.linalg.solve(B.T @ B + lam * P, B.T)
    assert np.trace(2 * S - S.T @ S) == pytest.approx(4.0, abs=1e-6)
    # two floating-point routes (eigenvalues vs an explicit solve with B'B of condition ~1e9)
    # agree to about 1e-6 relative, depending on the BLAS kernel
    assert df_of_lambda(smoother_eigenvalues(B, P), lam, trace_s=True) == pytest.approx(np.trace(S), rel=1e-5)
    with pytest.raises(ValueError, match="null-space"):
        lambda_for_df(B, P, 1.5)


def test_sum_to_zero_constraint_centres():
    x = np.random.default_rng(2).normal(size=100)
    B = BSplineBasis(2, 3).fit(x).transform(x)
    w = (np.arange(100) % 2).astype(float)
    Z = sum_to_zero_constraint(B, w)
    assert Z.shape == (6, 5)
    np.testing.assert_allclose(w @ (B @ Z), 0.0, atol=1e-12)


# ------------------------------------------------------------------------------------ boosting core
def test_boosting_one_linear_learner_converges_to_ols(crt_linear):
    td, _ = crt_linear
    X = np.column_stack([np.ones(td.n), td.treatment, td.X()])
    L = LearnerSet([X], [0.0], [None])
    fit = boost(L, td.outcome, mstop=400, nu=0.1)
    ols, *_ = np.linalg.lstsq(X, td.outcome, rcond=None)
    coef = fit.coef.copy()
    coef[0] += fit.offset
    np.testing.assert_allclose(coef, ols, atol=1e-9)
    # after m steps the fit has moved 1 - (1 - nu)^m of the way from the offset to OLS
    fit5 = boost(L, td.outcome, mstop=5, nu=0.1)
    target = ols.copy(); target[0] -= fit5.offset
    np.testing.assert_allclose(fit5.coef, (1 - 0.9 ** 5) * target, atol=1e-9)


def test_componentwise_selection_picks_best_learner():
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(2, 400))
    y = 3 * x1 + 0.1 * rng.normal(size=400)
    L = LearnerSet([np.column_stack([np.ones(400), x1]), np.column_stack([np.ones(400), x2])], [0, 0], [None, None])
    fit = boost(L, y, mstop=50)
    assert np.all(fit.selected == 0)


def test_random_intercept_step_is_lmm_blup(crt_linear):
    td, _ = crt_linear
    r = td.outcome - 0.3 * td.outcome.mean()
    ri = RandomIntercept(td.cluster_codes)
    b = ri.fit(r)
    ref = fit_lmm(r, np.empty((td.n, 0)), td.cluster, reml=True)  # lmer(r ~ 1 - 1 + (1 | id))
    np.testing.assert_allclose(b, ref.blups[:, 0], atol=1e-8)
    assert ri.tau2 == pytest.approx(ref.G[0, 0], rel=1e-8)
    assert ri.sigma2 == pytest.approx(ref.sigma2, rel=1e-8)
    # no between-cluster signal -> variance on the boundary, intercepts 0
    r0 = r - np.bincount(td.cluster_codes, r)[td.cluster_codes] / 20
    assert np.all(RandomIntercept(td.cluster_codes).fit(r0) == 0)


def test_correction_is_orthogonal_to_cluster_constant_columns(crt_linear):
    td, _ = crt_linear
    codes = td.cluster_codes
    first = np.unique(codes, return_index=True)[1]
    Xcc = np.column_stack([np.ones(30), td.treatment[first], td.X(["V1"])[first, 0]])
    ri = RandomIntercept(codes, cluster_projection(Xcc))
    b = ri.fit(td.outcome)
    np.testing.assert_allclose(Xcc.T @ b, 0.0, atol=1e-10)
    b_raw = RandomIntercept(codes).fit(td.outcome)
    resid = b_raw - Xcc @ np.linalg.lstsq(Xcc, b_raw, rcond=None)[0]
    np.testing.assert_allclose(b, resid, atol=1e-10)


# ------------------------------------------------------------------------------------ estimator
def test_registry_and_params():
    assert get("mermboost") is Mermboost
    est = make("mermboost", {"mstop_max": 50, "n_bootstrap": 0}, random_state=1)
    assert est.get_params()["mstop_max"] == 50 and est.get_params()["nu"] == 0.1
    with pytest.raises(MethodError, match="'nu'"):
        Mermboost(nu=0.0).fit(make_crt(1, M=6, size=4)[0])


def test_correction_needed_for_cluster_level_effect(crt_constant):
    """Without the (I - P) correction the intercepts absorb the cluster-level treatment effect."""
    td, _ = crt_constant
    lmm = get("lmm")(interactions=[]).fit(td).predict(td).point.mean()   # 0.60 on this draw
    with_c = Mermboost(mstop=150, n_bootstrap=0).fit(td).predict(td).point.mean()
    without = Mermboost(mstop=150, n_bootstrap=0, correct_re=False).fit(td).predict(td).point.mean()
    assert abs(with_c - lmm) < 0.15
    assert without < lmm - 0.3


def test_acceptance_linear(crt_linear):
    td, truth = crt_linear
    est = Mermboost(**QUICK, random_state=5).fit(td)
    res = est.predict(td)
    assert np.all(np.isfinite(res.point))
    assert np.corrcoef(res.point, truth)[0, 1] >= 0.8
    assert 1 <= est.mstop_cv_ <= 200 and est.mstop_ == 3 * est.mstop_cv_
    assert res.info["selected"]["bbs(X1, by = A)"] > 0


def test_acceptance_constant_fixture(crt_constant):
    td, _ = crt_constant
    assert abs(Mermboost(**QUICK, random_state=5).fit(td).predict(td).point.mean() - 1.0) < 0.3


def test_acceptance_constant_other_draw():
    td, _ = make_crt(6, "constant")
    assert abs(Mermboost(**QUICK, random_state=5).fit(td).predict(td).point.mean() - 1.0) < 0.3


def test_bootstrap_reproducible_and_new_clusters(crt_linear):
    td, _ = crt_linear
    new, _ = make_crt(97, "linear", M=4, size=5)
    new = TrialData(new.frame.assign(cluster=new.frame["cluster"] + 700), "crt",
                    new.individual_covariates, new.cluster_covariates, name="new")
    kw = dict(mstop_max=60, n_bootstrap=4)
    est = Mermboost(**kw, random_state=9).fit(td)
    a = est.predict(new)
    est.predict(td)
    np.testing.assert_array_equal(est.predict(new).draws, a.draws)   # refits are reused
    b = Mermboost(**kw, random_state=9).fit(td).predict(new)
    np.testing.assert_array_equal(a.point, b.point)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert a.draws.shape == (20, 4) and np.all(np.isfinite(a.draws))
    assert np.all(a.lower <= a.upper)
    _, lo, hi = a.ate()
    assert lo <= hi
    none = Mermboost(mstop_max=60, n_bootstrap=0, random_state=9).fit(td).predict(new)
    assert np.all(np.isnan(none.lower)) and none.draws is None
    np.testing.assert_array_equal(none.point, a.point)


@pytest.mark.slow
def test_paper_scale_defaults(crt_linear):
    """Paper-scale settings (CV up to 1000 iterations, 200 bootstrap replicates)."""
    td, truth = crt_linear
    res = Mermboost(random_state=1).fit(td).predict(td)
    assert np.corrcoef(res.point, truth)[0, 1] >= 0.9
    assert np.mean((res.lower <= truth) & (truth <= res.upper)) >= 0.8
    _, lo, hi = res.ate()
    assert lo <= truth.mean() <= hi


# ------------------------------------------------------------------------------------ bootstrap and mstop
def test_boost_path_is_the_fit_stopped_at_every_iteration(crt_linear):
    td, _ = crt_linear
    est = Mermboost(mstop=30, n_bootstrap=0).fit(td)
    L, ri = est.learners_, est._ri(td, td.cluster_codes)
    full = boost(L, td.outcome, 30, 0.1, ri, keep_path=True)
    for m in (1, 7, 30):
        short = boost(L, td.outcome, m, 0.1, est._ri(td, td.cluster_codes))
        np.testing.assert_allclose(full.path[m - 1], short.coef, atol=1e-12)


def test_refit_chooses_mstop_on_out_of_bag_clusters(crt_linear):
    """boot_mstop = "oob": the refit stops where the population-level error on the clusters not
    drawn is smallest (recomputed here from an independent boosting run)."""
    td, _ = crt_linear
    est = Mermboost(mstop_max=80, n_bootstrap=0, boot_mstop="oob", mstop_scale=1.0, random_state=3).fit(td)
    picked = bootstrap_clusters(td, np.random.default_rng(8))
    spec, coef, m = est._refit(picked)
    sample = sample_of_clusters(td, picked)
    held = td.subset(~np.isin(td.cluster_codes, picked))
    s2 = est._spec(sample)
    fit = boost(s2.learners(sample), sample.outcome, 80, 0.1, est._ri(sample, sample.cluster_codes),
                X_eval=s2.design(held), y_eval=held.outcome)
    assert m == int(np.argmin(fit.risk)) + 1
    again = boost(s2.learners(sample), sample.outcome, m, 0.1, est._ri(sample, sample.cluster_codes))
    np.testing.assert_allclose(coef, again.coef, atol=1e-12)
    # "fixed" keeps the full-data mstop
    fixed = Mermboost(mstop_max=80, n_bootstrap=0, boot_mstop="fixed", mstop_scale=1.0, random_state=3).fit(td)
    assert fixed._refit(picked)[2] == fixed.mstop_


def test_mstop_scale_multiplies_the_cv_choice(crt_linear):
    td, _ = crt_linear
    a = Mermboost(mstop_max=60, n_bootstrap=0, mstop_scale=1.0, random_state=2).fit(td)
    b = Mermboost(mstop_max=60, n_bootstrap=0, mstop_scale=2.5, random_state=2).fit(td)
    assert a.mstop_cv_ == b.mstop_cv_ and a.mstop_ == a.mstop_cv_
    assert b.mstop_ == int(np.ceil(2.5 * b.mstop_cv_))
    for bad in (0.5, float("nan"), float("inf"), "2"):
        with pytest.raises(MethodError, match="mstop_scale"):
            Mermboost(mstop_scale=bad)
    with pytest.raises(MethodError, match="boot_mstop"):
        Mermboost(boot_mstop="cv")


def test_t_quantile_interval_and_bootstrap_sampling(crt_linear):
    from scipy.stats import t
    from clusterhte.methods.bootstrap import bootstrap_result, resample_clusters

    rng = np.random.default_rng(0)
    draws = rng.normal(size=(5, 8))
    point = np.zeros(5)
    res = bootstrap_result(point, draws, student_t=True)
    np.testing.assert_allclose(res.upper, t.ppf(0.975, 7) * draws.std(axis=1, ddof=1))
    assert res.info["interval"] == "cluster bootstrap (normal, t quantile)"
    normal = bootstrap_result(point, draws)
    assert np.all(normal.upper < res.upper)
    # resampling: within arm, same draw as picking codes then gathering their rows
    td, _ = crt_linear
    a = resample_clusters(td, np.random.default_rng(4))
    picked = bootstrap_clusters(td, np.random.default_rng(4))
    b = sample_of_clusters(td, picked)
    assert a.frame.equals(b.frame)
    arm = td.frame.groupby("cluster")["treatment"].first().to_numpy()
    assert arm[picked].sum() == arm.sum() and len(picked) == arm.size


def test_small_trial_ten_clusters_unequal_sizes():
    """10 clusters (5 per arm), sizes 3-80: CV folds capped at 5 (one treated and one control
    cluster each), bootstrap refits run, intervals finite, over several seeds."""
    for seed in range(3):
        td, tau = simulate("small", np.random.default_rng(seed))
        res = Mermboost(mstop_max=60, n_bootstrap=4, random_state=seed).fit(td).predict(td)
        assert np.all(np.isfinite(res.lower)) and np.all(np.isfinite(res.upper))
        assert np.all(res.lower <= res.point) and np.all(res.point <= res.upper)


def _coverage(scenario: str, reps: int, **kw) -> dict:
    rows = []
    for r in range(reps):
        td, tau = simulate(scenario, np.random.default_rng(500 + r))
        res = Mermboost(**kw, random_state=r).fit(td).predict(td)
        rows.append(metrics(tau, res.point, res.lower, res.upper, res.ate()))
    return {k: float(np.mean([m[k] for m in rows])) for k in ("coverage", "zero_in_interval", "cate_sd", "pehe", "width")}


def test_coverage_small_ci_version():
    """One replicate of the linear battery scenario at the quick settings: pointwise coverage of
    the 95% intervals at least 0.8 (the slow test below checks [0.85, 0.995] over 20)."""
    out = _coverage("linear", 1, **QUICK_BOOT)
    print(out)
    assert out["coverage"] >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["linear", "nonlinear", "null"])
def test_coverage_battery_scenarios(scenario):
    out = _coverage(scenario, 20, **QUICK_BOOT)
    print(f"\nmermboost {scenario} (20 reps, quick settings): {out}")
    if scenario == "null":
        assert out["cate_sd"] < 0.25 and out["zero_in_interval"] >= 0.9
    else:
        assert 0.85 <= out["coverage"] <= 0.995
