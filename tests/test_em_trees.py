"""MERF / MEGB: the EM against statsmodels MixedLM, the absorption correction, CATE accuracy,
cluster-bootstrap intervals, reproducibility and errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import statsmodels.formula.api as smf
from sklearn.linear_model import LinearRegression

from clusterhte.data.trial import TrialData
from clusterhte.methods import get
from clusterhte.methods.base import MethodError
from clusterhte.methods.bootstrap import resample_clusters
from clusterhte.methods.em_trees import (MEGB, MERF, ORIGIN, LinearStart, calibrated_effect,
                                         cluster_constant_mask, cluster_design, cluster_projector,
                                         crossfit_folds, em_random_intercept, features, linear_main_effects,
                                         linear_start_cv, weighted_linear_fit)
from clusterhte.mixed.design import AliasedColumnsWarning
from clusterhte.simulate.battery import simulate

from conftest import lmm_ate, make_crt, small_multisite

QUICK = {"merf": dict(n_estimators=30, max_iter=5, cv_folds=3, n_bootstrap=0),
         "megb": dict(n_estimators=100, max_iter=10, n_bootstrap=0)}
R_ORIGINAL = dict(learner_form="s", project_cluster_constant=False)


def battery_trial(scenario: str, rep: int):
    return simulate(scenario, np.random.default_rng([20231, rep, len(scenario)]))
CLASSES = {"merf": MERF, "megb": MEGB}


def lmm_effect(td: TrialData) -> float:
    """Treatment coefficient of the correctly specified random-intercept LMM (REML)."""
    return lmm_ate(td, "outcome ~ treatment + X1 + X2 + X3 + V1")[0]


def test_registry_names_the_classes():
    assert get("merf") is MERF and get("megb") is MEGB
    assert MERF.designs == ("crt",) and MEGB.has_intervals


def test_em_with_linear_learner_is_the_ml_random_intercept_fit():
    """Fixed point of the EM with an OLS learner = ML fit of the random-intercept LMM."""
    td, _ = make_crt(12, "constant")  # a draw whose ML random-intercept variance is interior
    F, y, codes = features(td), td.outcome, td.cluster_codes
    em = em_random_intercept(F, y, codes, lambda it: LinearRegression(), max_iter=5000, tol=1e-13,
                             sigma2_b=0.5, sigma2_e=0.5)
    assert em.converged
    f = td.frame
    ref = smf.mixedlm("outcome ~ X1 + X2 + X3 + V1 + treatment", f, groups=f["cluster"]).fit(
        reml=False, method="lbfgs")
    beta_ref = ref.fe_params[["X1", "X2", "X3", "V1", "treatment"]].to_numpy()
    np.testing.assert_allclose(em.learner.coef_, beta_ref, atol=2e-4)
    np.testing.assert_allclose(em.learner.intercept_, ref.fe_params["Intercept"], atol=2e-4)
    np.testing.assert_allclose(em.sigma2_e, ref.scale, rtol=1e-3)
    np.testing.assert_allclose(em.sigma2_b, float(ref.cov_re.iloc[0, 0]), rtol=2e-3)
    # the BLUPs of the fixed point equal statsmodels' random effects
    blup = np.array([ref.random_effects[k].iloc[0] for k in sorted(ref.random_effects)])
    np.testing.assert_allclose(em.b, blup, atol=1e-3)
    # the GLL never increases by more than rounding once the loop has started
    assert np.all(np.diff(em.gll[1:]) <= 1e-8 * np.abs(em.gll[1:-1]))


def test_projection_removes_cluster_constant_directions(crt_constant):
    td, _ = crt_constant
    F, codes = features(td), td.cluster_codes
    mask = cluster_constant_mask(F, codes)
    assert mask.tolist() == [False, False, False, True, True]  # X1 X2 X3 | V1 A
    Q = cluster_projector(F, codes)
    assert Q.shape == (30, 3)
    J = codes.max() + 1
    first = np.unique(codes, return_index=True)[1]
    Xcc = np.column_stack([np.ones(J), F[first][:, mask]])
    b = np.random.default_rng(0).normal(size=J)
    bt = b - Q @ (Q.T @ b)
    np.testing.assert_allclose(Xcc.T @ bt, 0, atol=1e-10)
    # a vector in the span is removed entirely; (I - P) is idempotent
    v = Xcc @ np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(v - Q @ (Q.T @ v), 0, atol=1e-10)
    np.testing.assert_allclose(bt - Q @ (Q.T @ bt), bt, atol=1e-12)
    # with the treatment: A x V1 joins the span; A x A = A is aliased and adds nothing
    a = td.treatment
    Qa = cluster_projector(F, codes, treatment=a)
    assert Qa.shape == (30, 4)
    ac = a[first]
    v = Xcc @ np.array([0.1, 0.2, 0.3]) + 0.7 * ac * F[first, 3]
    np.testing.assert_allclose(v - Qa @ (Qa.T @ v), 0, atol=1e-10)
    # an aliased cluster covariate (a copy of A) leaves the projection unchanged
    Fal = np.column_stack([F[:, :-1], a, a])
    np.testing.assert_allclose(cluster_projector(Fal, codes, a) @ cluster_projector(Fal, codes, a).T,
                               Qa @ Qa.T, atol=1e-10)


def test_linear_main_effects_known_answer():
    """The least-squares fitted values on [1, G]: exact for a linear r, orthogonal residual, and
    unchanged by an aliased (duplicated) column."""
    rng = np.random.default_rng(3)
    G = rng.normal(size=(200, 3))
    main = 0.4 + G @ np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(linear_main_effects(G, main), main, atol=1e-10)
    r = main + rng.normal(size=200)
    fit = linear_main_effects(G, r)
    D = np.column_stack([np.ones(200), G])
    np.testing.assert_allclose(D.T @ (r - fit), 0, atol=1e-9)
    np.testing.assert_allclose(linear_main_effects(np.column_stack([G, G[:, 1]]), r), fit, atol=1e-10)


def test_calibration_slope_known_answers():
    """The slope is the weighted LS coefficient of z on the centred out-of-fold predictions,
    James-Stein-shrunk by its cluster-robust t; no signal gives the ATE; clipped at 1."""
    rng = np.random.default_rng(4)
    n, J = 800, 80
    codes = np.repeat(np.arange(J), n // J)
    g = rng.normal(size=n)
    w = np.full(n, 0.25)
    z = 0.3 + 0.6 * g + rng.normal(scale=0.5, size=n)
    cal = calibrated_effect(None, g, g, z, w, codes)
    beta = np.polyfit(g, z, 1)[0]
    assert abs(cal.ate - z.mean()) < 1e-12
    assert abs(cal.slope - beta * (1 - 1 / cal.t ** 2)) < 1e-12 and cal.t > 10
    assert abs(cal.slope - 0.6) < 0.05
    # pure noise predictions: slope 0 (t < 1) or small
    slopes = [calibrated_effect(None, g, rng.normal(size=n), z, w, codes).slope for _ in range(20)]
    assert np.mean(np.array(slopes) == 0) >= 0.6 and max(slopes) < 0.15
    # clipped at 1 when the held-out predictions are too flat
    assert calibrated_effect(None, g, 0.2 * g, z, w, codes).slope == 1.0
    # "test" shrinkage: the James-Stein factor of the same t only (no factor beta)
    test = calibrated_effect(None, g, g, z, w, codes, shrinkage="test")
    assert test.t == cal.t and abs(test.slope - (1 - 1 / cal.t ** 2)) < 1e-12
    assert calibrated_effect(None, g, -g, z, w, codes, shrinkage="test").slope == 0.0


def test_crossfit_folds_survive_bootstrap_with_few_clusters():
    """Folds keep whole original clusters and both arms; a refit with one distinct cluster per arm
    falls back to its copies instead of failing."""
    td, _ = make_crt(5, "linear", M=4, size=10)
    tagged = replace(td, frame=td.frame.assign(**{ORIGIN: td.cluster_codes}))
    rng = np.random.default_rng(0)
    for _ in range(30):
        bs = resample_clusters(tagged, rng)
        folds = crossfit_folds(bs, 5, rng)
        assert folds.max() + 1 >= 2
        for k in range(folds.max() + 1):
            assert set(bs.treatment[folds == k]) == {0, 1}
        origin = bs.frame[ORIGIN].to_numpy()
        distinct = [len(set(origin[bs.treatment == arm])) for arm in (0, 1)]
        if min(distinct) >= 2:  # copies of an original cluster never straddle folds
            for o in np.unique(origin):
                assert len(set(folds[origin == o])) == 1


@pytest.mark.parametrize("name", ["merf", "megb"])
def test_projection_is_needed_against_absorption(name, crt_constant):
    """S-learner (the R original's form, still reachable): without the correction the random
    intercept absorbs the cluster-level effect; the correction moves the mean CATE toward the LMM's
    estimate (1.00)."""
    td, _ = crt_constant
    cls, kw = CLASSES[name], dict(QUICK[name], learner_form="s")
    with_p = cls(**kw, project_cluster_constant=True, random_state=1).fit(td).predict(td).point.mean()
    without = cls(**kw, project_cluster_constant=False, random_state=1).fit(td).predict(td).point.mean()
    ref = lmm_effect(td)
    assert without < ref - 0.5
    assert with_p > without + 0.15


@pytest.mark.parametrize("name", ["merf", "megb"])
def test_default_learner_meets_constant_effect(name, crt_constant):
    """Acceptance: the mean CATE is within 0.3 of the true constant effect 1.0, and flat (the
    calibration finds no heterogeneity to keep)."""
    td, _ = crt_constant
    res = CLASSES[name](**QUICK[name], random_state=1).fit(td).predict(td)
    assert abs(res.point.mean() - 1.0) < 0.3
    assert res.point.std() < 0.2


@pytest.mark.parametrize("name", ["merf", "megb"])
def test_constant_effect_recovered_on_larger_trial(name):
    td, tau = make_crt(21, "constant", M=80)
    res = CLASSES[name](**QUICK[name], random_state=2).fit(td).predict(td)
    assert abs(res.point.mean() - 1.0) < 0.3


def test_cluster_design_names_aliased_columns_in_lme4_order(crt_constant):
    """[1, A, C, A x C] with C = (V1, V2 = A, V3 = 0): the in-order rank test drops V2 (= A),
    A x V2 (= A) and the all-zero V3 and A x V3; the span is unchanged."""
    td, _ = crt_constant
    codes, a = td.cluster_codes, td.treatment
    G = np.column_stack([td.X(), a, np.zeros(td.n)])
    names = [*td.covariates, "V2", "V3"]
    Q, dropped = cluster_design(G, codes, a, names)
    assert dropped == ["V2", "V3", "treatment:V2", "treatment:V3"]
    Q0, none = cluster_design(td.X(), codes, a, td.covariates)
    assert none == [] and Q.shape == Q0.shape == (30, 4)
    np.testing.assert_allclose(Q @ Q.T, Q0 @ Q0.T, atol=1e-10)


def test_weighted_linear_fit_is_the_linear_r_learner():
    """Weighted least squares of z on [1, G] (normal equations), exact for a linear z, an aliased
    copy of a column dropped without changing the fit; linear=False is the zero function."""
    rng = np.random.default_rng(8)
    n = 300
    G = rng.normal(size=(n, 3))
    w = rng.uniform(0.1, 1.0, n)
    z = 0.2 + G @ np.array([0.5, -1.0, 0.0]) + rng.normal(size=n)
    fit = weighted_linear_fit(G, z, w)
    D = np.column_stack([np.ones(n), G])
    coef = np.linalg.solve(D.T @ (w[:, None] * D), D.T @ (w * z))
    np.testing.assert_allclose(fit.predict(G), D @ coef, atol=1e-10)
    Gal = np.column_stack([G, 2 * G[:, 0]])
    fal = weighted_linear_fit(Gal, z, w)
    assert fal.keep.tolist() == [True, True, True, True, False]
    np.testing.assert_allclose(fal.predict(Gal), fit.predict(G), atol=1e-10)
    assert np.all(weighted_linear_fit(G, z, w, linear=False).predict(G) == 0)


def test_linear_start_fits_trees_to_the_linear_residual():
    """LinearStart = linear R-learner + learner of its residual; the cross-validation version
    fits the linear part on the training folds only."""
    import lightgbm as lgb

    rng = np.random.default_rng(9)
    n = 400
    G = rng.normal(size=(n, 2))
    w = np.full(n, 0.25)
    z = 1.0 + 2.0 * G[:, 0] + rng.normal(scale=0.1, size=n)
    m = LinearStart(LinearRegression()).fit(G, z, sample_weight=w)
    np.testing.assert_allclose(m.model.coef_, 0, atol=1e-10)  # nothing linear left for the learner
    np.testing.assert_allclose(m.predict(G), m.linear_.predict(G), atol=1e-10)
    folds = np.repeat(np.arange(4), n // 4)
    ds, pairs, fpreproc, lins = linear_start_cv(lgb, G, z, w, folds, True, {"verbose": -1})
    lgb.cv({"objective": "regression", "verbose": -1, "num_leaves": 4}, ds, num_boost_round=3, folds=pairs,
           fpreproc=fpreproc, stratified=False)
    assert [te.tolist() for te, _ in lins] == [te.tolist() for _, te in pairs]
    for (tr, te), (_, lin) in zip(pairs, lins):
        ref = weighted_linear_fit(G[tr], z[tr], w[tr])
        np.testing.assert_allclose(lin.predict(G[te]), ref.predict(G[te]), atol=1e-12)


@pytest.mark.parametrize("name", ["merf", "gpboost"])
def test_aliased_columns_reported(name):
    """A cluster covariate equal to the arm and a rescaled copy of X1: the fit warns naming the
    dropped columns of its linear parts (as lme4) and lists them in info['dropped']."""
    from clusterhte.methods.gpboost import GPBoost

    td, _ = battery_trial("small", 1)
    f = td.frame
    td = replace(td, frame=f.assign(V2=f["treatment"].astype(float), X5=2 * f["X1"]),
                 individual_covariates=(*td.individual_covariates, "X5"))
    est = (MERF(**QUICK["merf"], random_state=0) if name == "merf"
           else GPBoost(learning_rate=0.1, max_rounds=100, cv_folds=3, n_bootstrap=0, random_state=0))
    with pytest.warns(AliasedColumnsWarning, match=r"V2.*treatment:V2.*X5"):
        res = est.fit(td).predict(td)
    assert res.info["dropped"] == {"random-intercept projection": ["V2", "treatment:V2"],
                                   "linear main effects and effect start": ["X5"]}
    assert np.all(np.isfinite(res.point))


@pytest.mark.parametrize("name", ["merf", "megb"])
def test_linear_modifier_tracked(name, crt_linear):
    td, tau = crt_linear
    res = CLASSES[name](**QUICK[name], random_state=3).fit(td).predict(td)
    assert np.all(np.isfinite(res.point))
    assert np.corrcoef(res.point, tau)[0, 1] >= 0.8
    assert np.all(np.isnan(res.lower)) and res.draws is None  # n_bootstrap = 0: no intervals


@pytest.mark.parametrize("name", ["merf", "megb"])
def test_null_effect_gives_flat_cates(name):
    """No effect anywhere: over several trials the CATE SD stays small (the per-arm form of the R
    originals gave 0.42 here)."""
    sds = []
    for rep in range(3):
        td, _ = battery_trial("null", rep)
        sds.append(CLASSES[name](**QUICK[name], random_state=rep).fit(td).predict(td).point.std())
    assert np.mean(sds) < 0.15 and max(sds) < 0.3, sds


@pytest.mark.parametrize("name", ["merf", "megb"])
def test_cluster_level_modifier_recovered(name):
    """tau = 0.5 + 0.8 V1 (cluster covariate only): not swallowed by the random intercept."""
    for rep in range(2):
        td, tau = battery_trial("cluster", rep)
        res = CLASSES[name](**QUICK[name], random_state=rep).fit(td).predict(td)
        assert np.corrcoef(res.point, tau)[0, 1] >= 0.6
        assert res.point.std() > 0.4
        assert abs(res.point.mean() - tau.mean()) < 0.3


def test_t_form_is_reachable_and_noisy_under_null():
    """The per-arm form remains reachable; under the null it invents heterogeneity."""
    td, _ = battery_trial("null", 0)
    t = MEGB(**QUICK["megb"], learner_form="t", random_state=0).fit(td).predict(td).point.std()
    r = MEGB(**QUICK["megb"], random_state=0).fit(td).predict(td).point.std()
    assert t > 0.25 and r < t / 2


@pytest.mark.parametrize("name", ["merf", "megb"])
def test_ten_cluster_trial_with_bootstrap(name):
    """10 clusters of sizes 3-80: every refit (some with few distinct clusters) runs."""
    td, tau = battery_trial("small", 0)
    kw = dict(QUICK[name], n_bootstrap=4)
    res = CLASSES[name](**kw, random_state=1).fit(td).predict(td)
    assert np.all(np.isfinite(res.point)) and np.all(np.isfinite(res.lower)) and res.draws.shape == (td.n, 4)
    assert np.all(res.lower <= res.point) and np.all(res.point <= res.upper)


def test_new_clusters_and_reproducibility(crt_linear):
    td, _ = crt_linear
    new, _ = make_crt(99, "linear", M=6)
    new = replace(new, frame=new.frame.assign(cluster=new.frame["cluster"] + 1000))
    kw = dict(n_estimators=10, max_iter=3, cv_folds=3, n_bootstrap=2)
    a = MERF(**kw, random_state=5).fit(td)
    b = MERF(**kw, random_state=5).fit(td)
    ra, rb = a.predict(new), b.predict(new)
    assert ra.point.shape == (new.n,) and np.all(np.isfinite(ra.point))
    np.testing.assert_array_equal(ra.point, rb.point)
    np.testing.assert_array_equal(ra.draws, rb.draws)
    rc = MERF(**kw, random_state=6).fit(td).predict(new)
    assert not np.allclose(ra.point, rc.point)
    # the treatment and outcome of the prediction table are irrelevant
    flipped = replace(new, frame=new.frame.assign(treatment=1 - new.frame["treatment"], outcome=0.0))
    np.testing.assert_array_equal(a.predict(flipped).point, ra.point)


def test_bootstrap_intervals_contain_point_and_widen_with_fewer_clusters():
    kw = dict(n_estimators=60, max_iter=4, cv_folds=3, n_bootstrap=12)
    widths = []
    for M in (40, 10):
        td, _ = make_crt(31, "linear", M=M)
        res = MEGB(**kw, random_state=7).fit(td).predict(td)
        assert res.draws.shape == (td.n, 12)
        inside = (res.lower <= res.point) & (res.point <= res.upper)
        assert inside.mean() >= 0.9
        est, lo, hi = res.ate()
        assert lo <= est <= hi
        widths.append(np.mean(res.upper - res.lower))
    assert widths[1] > 1.3 * widths[0]


def test_multisite_data_refused():
    ms = small_multisite()
    with pytest.raises(MethodError, match="merf.*crt"):
        MERF(**QUICK["merf"]).fit(ms)


def test_bad_hyperparameters_named(crt_linear):
    td, _ = crt_linear
    with pytest.raises(MethodError, match="max_depth"):
        MEGB(max_depth=1).fit(td)
    with pytest.raises(MethodError, match="n_bootstrap"):
        MERF(n_bootstrap=-1).fit(td)
    with pytest.raises(MethodError, match="max_iter"):
        MERF(max_iter=0).fit(td)
    with pytest.raises(MethodError, match="learner_form"):
        MERF(learner_form="x").fit(td)
    with pytest.raises(MethodError, match="cv_folds"):
        MEGB(cv_folds=1).fit(td)
    with pytest.raises(MethodError, match="tol"):
        MEGB(tol=float("nan")).fit(td)
    with pytest.raises(MethodError, match="bootstrap_trees"):
        MERF(bootstrap_trees=7).fit(td)
    for mf in (1.5, float("nan"), "sqrt"):
        with pytest.raises(MethodError, match="max_features"):
            MERF(max_features=mf).fit(td)
    with pytest.raises(MethodError, match="effect_shrinkage"):
        MEGB(effect_shrinkage="js").fit(td)
    with pytest.raises(MethodError, match="effect_interval"):
        MERF(effect_interval="union").fit(td)
    with pytest.raises(MethodError, match="X2"):
        m = MERF(n_estimators=10, max_iter=2, n_bootstrap=0).fit(td)
        m.predict(replace(td, frame=td.frame.drop(columns="X2"), individual_covariates=("X1", "X3")))


def test_defaults_are_paper_scale():
    assert MERF.default_params() == dict(n_estimators=300, min_samples_leaf=5, max_features=1.0,
                                         max_iter=20, tol=1e-3, project_cluster_constant=True,
                                         learner_form="r", cv_folds=5, outcome_passes=1,
                                         effect_min_samples_leaf=40, effect_linear=True,
                                         effect_shrinkage="test", effect_interval="hull", n_bootstrap=50,
                                         bootstrap_trees=100, n_threads=1)
    d = MEGB.default_params()
    assert (d["n_estimators"], d["learning_rate"], d["max_depth"], d["min_samples_leaf"], d["max_iter"],
            d["tol"]) == (500, 0.05, 3, 5, 100, 1e-3)


def test_monte_carlo_correction_recovers_the_sampling_variance():
    """Refits = sampling draw + forest Monte Carlo noise (two independent halves): the corrected
    variance is the sampling variance plus the full-data forest's noise, whatever the refit size."""
    from clusterhte.methods.bootstrap import monte_carlo_corrected_result

    rng = np.random.default_rng(11)
    rows, B = 4000, 50
    sd_sampling, sigma_tree = 0.3, 1.5
    target = np.sqrt(sd_sampling ** 2 + sigma_tree ** 2 / 300)
    for T_refit in (300, 100):
        S = rng.normal(scale=sd_sampling, size=(rows, B))
        h1 = rng.normal(scale=sigma_tree / np.sqrt(T_refit / 2), size=(rows, B))
        h2 = rng.normal(scale=sigma_tree / np.sqrt(T_refit / 2), size=(rows, B))
        draws, diff = S + (h1 + h2) / 2, h1 - h2
        res = monte_carlo_corrected_result(np.zeros(rows), draws, diff, T_refit / 300)
        se = np.sqrt(np.mean(res.info["se"] ** 2))
        assert abs(se / target - 1) < 0.02, (T_refit, se, target)
        plain = np.sqrt(np.mean(draws.var(axis=1, ddof=1)))
        if T_refit == 100:  # without the correction the smaller refits would widen the interval
            assert plain / target - 1 > 0.05
    lo, hi = res.info["ate_interval"]
    assert lo < 0 < hi


@pytest.mark.slow
def test_merf_refit_size_does_not_change_the_width():
    """MERF with refits as large as the full-data forests (120 trees) and a third of that (40),
    on the same cluster resamples: the mean interval width agrees within Monte Carlo error, while
    the plain bootstrap SD of the small refits is larger (prints the numbers)."""
    for rep in range(2):
        td, _ = battery_trial("linear", rep)
        w, sd = {}, {}
        for bt in (120, 40):
            r = MERF(n_estimators=120, n_bootstrap=10, bootstrap_trees=bt, random_state=rep).fit(td).predict(td)
            w[bt] = float(np.mean(r.upper - r.lower))
            sd[bt] = float(np.mean(np.std(r.draws, axis=1, ddof=1)))
        print(rep, "width", w, "plain bootstrap SD", sd)
        assert abs(w[40] / w[120] - 1) < 0.1, w


def test_fast_forest_is_sklearns_forest():
    """MERF's forest grows sklearn's trees without sklearn's per-tree Python machinery: the same
    trees, bit for bit, with and without weights, with feature subsampling, in threads too."""
    from sklearn.ensemble import RandomForestRegressor

    from clusterhte.methods.em_trees import RandomForest

    rng = np.random.default_rng(12)
    X, w = rng.normal(size=(300, 5)), rng.uniform(0.1, 1, 300)
    y = X[:, 0] + rng.normal(size=300)
    Xt = rng.normal(size=(200, 5))
    for sw, leaf, mf, jobs in ((w, 5, 1.0, 1), (None, 3, 1.0, 1), (w, 40, 0.6, 1), (None, 5, 2, 2)):
        kw = dict(n_estimators=20, min_samples_leaf=leaf, max_features=mf, random_state=31)
        ref = RandomForestRegressor(**kw).fit(X, y, sample_weight=sw)
        ours = RandomForest(n_jobs=jobs, **kw).fit(X, y, sample_weight=sw)
        np.testing.assert_array_equal(ours.predict(Xt), ref.predict(Xt))
        np.testing.assert_array_equal(ours.tree_predictions(Xt), np.stack([t.predict(Xt) for t in ref.estimators_]))
    with pytest.raises(ValueError, match="finite"):
        RandomForest(n_estimators=2).fit(X, np.where(np.arange(300) == 7, np.nan, y))


def test_hull_interval_contains_the_shrunk_and_the_unshrunk_intervals():
    """effect_interval = "hull": the shrunk point, the hull of the shrunk estimate's bootstrap
    interval and the unshrunk estimate's (slope 1 in the fit and every refit), the shrunk draws;
    "shrunk" gives the shrunk interval alone. Checked against the two intervals rebuilt from the
    fitted models."""
    from clusterhte.methods.em_trees import result_with_bootstrap, unshrunk_fit

    td, _ = battery_trial("cluster", 3)
    kw = dict(n_estimators=100, learning_rate=0.1, n_bootstrap=6, random_state=4)
    hull = MEGB(**kw).fit(td)
    res = hull.predict(td)
    shrunk = MEGB(effect_interval="shrunk", **kw).fit(td).predict(td)
    np.testing.assert_array_equal(res.point, shrunk.point)
    np.testing.assert_array_equal(res.draws, shrunk.draws)
    G = td.X(hull.covariates_)
    cal = hull.fit_.effect
    np.testing.assert_allclose(cal.unshrunk().predict(G), cal.ate + cal.model.predict(G) - cal.center)
    un = result_with_bootstrap(hull._cate(unshrunk_fit(hull.fit_), td),
                               [hull._cate(unshrunk_fit(b), td) for b in hull.boot_])
    np.testing.assert_allclose(res.lower, np.minimum(shrunk.lower, un.lower))
    np.testing.assert_allclose(res.upper, np.maximum(shrunk.upper, un.upper))
    assert res.info["interval"] == "hull" and res.ate() == shrunk.ate()


def test_megb_fits_a_two_to_one_trial_where_lightgbm_used_to_abort():
    """The battery's 2:1 design, replicate 1: with ``min_sum_hessian_in_leaf = 0`` LightGBM aborted
    ("Check failed: (best_split_info.left_count) > (0)") on the effect booster, whose R-learner
    weights (A - e)^2 differ by arm when e = 2/3."""
    from clusterhte import seeds
    from clusterhte.evaluate import battery
    from clusterhte.simulate.battery import simulate

    trial, tau = simulate("two_to_one", seeds.rng(20231, "battery", "two_to_one", 1))
    params = battery.settings("quick")["megb"]
    res = MEGB(**params, random_state=seeds.int_seed(20231, "battery", "two_to_one", 1, "megb")).fit(trial).predict(trial)
    assert np.all(np.isfinite(res.point)) and np.all(res.lower <= res.upper)
    assert np.corrcoef(res.point, tau)[0, 1] > 0.5
