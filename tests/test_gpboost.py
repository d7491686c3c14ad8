"""GPBoost: the R-learner form (flat CATEs under no effect, a cluster-level modifier recovered,
varying CATEs, small trials, aliased covariates), the R original's S-learner still reachable,
cluster-bootstrap intervals, reproducibility and errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clusterhte.methods import get
from clusterhte.methods.base import MethodError
from clusterhte.methods.gpboost import GPBoost
from clusterhte.mixed.design import AliasedColumnsWarning
from clusterhte.simulate.battery import simulate

from conftest import make_crt, small_multisite

QUICK = dict(learning_rate=0.1, max_rounds=300, n_bootstrap=0)


def battery_trial(scenario: str, rep: int):
    return simulate(scenario, np.random.default_rng([20231, rep, len(scenario)]))


def test_registry():
    assert get("gpboost") is GPBoost and GPBoost.designs == ("crt",)


def test_null_effect_gives_flat_cates():
    sds = []
    for rep in range(3):
        td, _ = battery_trial("null", rep)
        sds.append(GPBoost(**QUICK, random_state=rep).fit(td).predict(td).point.std())
    assert np.mean(sds) < 0.15 and max(sds) < 0.3, sds


def test_cluster_level_modifier_recovered():
    """tau = 0.5 + 0.8 V1: the old offset form gave a CATE SD of 0.02 here (truth 0.8)."""
    for rep in range(2):
        td, tau = battery_trial("cluster", rep)
        res = GPBoost(**QUICK, random_state=rep).fit(td).predict(td)
        assert np.corrcoef(res.point, tau)[0, 1] >= 0.6
        assert res.point.std() > 0.4
        assert abs(res.point.mean() - tau.mean()) < 0.3


def test_linear_modifier_tracked(crt_linear):
    td, tau = crt_linear
    res = GPBoost(**QUICK, random_state=3).fit(td).predict(td)
    assert np.all(np.isfinite(res.point))
    assert np.corrcoef(res.point, tau)[0, 1] >= 0.8
    assert res.point.std() > 0.6  # true SD 1.0; the old S-learner form gave 0.02-0.30
    assert 1 <= res.info["outcome_rounds"] < 300 and 1 <= res.info["effect_rounds"] < 300
    assert np.all(np.isnan(res.upper))


def test_constant_effect_recovered_on_larger_trial():
    td, _ = make_crt(21, "constant", M=80)
    res = GPBoost(**QUICK, random_state=2).fit(td).predict(td)
    assert abs(res.point.mean() - 1.0) < 0.3


def test_r_original_s_learner_reachable_and_absorbs(crt_constant):
    """The R original (S-learner on [X, V, A]) puts the cluster-level effect into the random
    intercept: mean CATE ~ 0 against a true 1.0; the default form recovers it."""
    td, _ = crt_constant
    s = GPBoost(**QUICK, learner_form="s", random_state=1).fit(td).predict(td)
    r = GPBoost(**QUICK, random_state=1).fit(td).predict(td)
    assert abs(s.point.mean()) < 0.2 and s.info["learner_form"] == "s"
    assert abs(r.point.mean() - 1.0) < 0.3


def test_small_trials_and_aliased_covariate_run():
    """4 clusters (2 per arm), bootstrap refits with one distinct cluster per arm, and a cluster
    covariate equal to the treatment (aliased with A): no crash, finite intervals."""
    td, _ = make_crt(8, "linear", M=4, size=15)
    td = replace(td, frame=td.frame.assign(V2=td.frame["treatment"].astype(float)),
                 cluster_covariates=("V1", "V2"))
    with pytest.warns(AliasedColumnsWarning, match="V2"):
        res = GPBoost(**dict(QUICK, n_bootstrap=6), random_state=0).fit(td).predict(td)
    assert res.info["dropped"]["random-intercept projection"] == ["V2", "treatment:V2"]
    assert np.all(np.isfinite(res.point)) and np.all(np.isfinite(res.lower)) and res.draws.shape == (td.n, 6)
    td10, _ = battery_trial("small", 0)
    res10 = GPBoost(**dict(QUICK, n_bootstrap=3), random_state=1).fit(td10).predict(td10)
    assert np.all(np.isfinite(res10.upper))


def test_bootstrap_intervals_contain_point_and_widen_with_fewer_clusters():
    widths = []
    for M in (40, 10):
        td, _ = make_crt(51, "linear", M=M)
        res = GPBoost(learning_rate=0.1, max_rounds=200, cv_folds=3, n_bootstrap=8,
                      random_state=4).fit(td).predict(td)
        assert res.draws.shape == (td.n, 8)
        assert np.all((res.lower <= res.point) & (res.point <= res.upper))
        est, lo, hi = res.ate()
        assert lo <= est <= hi
        widths.append(np.mean(res.upper - res.lower))
    assert widths[1] > 1.3 * widths[0]


def test_new_clusters_and_reproducibility(crt_linear):
    td, _ = crt_linear
    new, _ = make_crt(97, "linear", M=4)
    new = replace(new, frame=new.frame.assign(cluster=new.frame["cluster"] + 700))
    kw = dict(QUICK, n_bootstrap=2)
    r1 = GPBoost(**kw, random_state=5).fit(td).predict(new)
    r2 = GPBoost(**kw, random_state=5).fit(td).predict(new)
    assert np.all(np.isfinite(r1.point))
    np.testing.assert_array_equal(r1.point, r2.point)
    np.testing.assert_array_equal(r1.draws, r2.draws)


def test_multisite_refused_and_bad_hyperparameters(crt_linear):
    ms = small_multisite()
    with pytest.raises(MethodError, match="gpboost"):
        GPBoost(**QUICK).fit(ms)
    td, _ = crt_linear
    with pytest.raises(MethodError, match="cv_folds"):
        GPBoost(cv_folds=1).fit(td)
    with pytest.raises(MethodError, match="learning_rate"):
        GPBoost(learning_rate=0).fit(td)
    with pytest.raises(MethodError, match="learning_rate"):
        GPBoost(learning_rate=float("inf")).fit(td)
    with pytest.raises(MethodError, match="learner_form"):
        GPBoost(learner_form="t").fit(td)
    with pytest.raises(MethodError, match="effect_shrinkage"):
        GPBoost(effect_shrinkage="none").fit(td)
    with pytest.raises(MethodError, match="effect_linear"):
        GPBoost(effect_linear="yes").fit(td)


def test_defaults():
    d = GPBoost.default_params()
    assert (d["learning_rate"], d["max_depth"], d["max_rounds"], d["cv_folds"], d["n_threads"],
            d["learner_form"]) == (0.05, 3, 1000, 5, 1, "r")


