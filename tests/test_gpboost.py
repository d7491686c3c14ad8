"""GPBoost: the linear offset against statsmodels, absorption with and without the correction,
acceptance on the shared fixtures, cluster-bootstrap intervals, reproducibility and errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clusterhte.data.trial import TrialData
from clusterhte.methods import get
from clusterhte.methods.base import MethodError
from clusterhte.methods.gpboost import GPBoost

from conftest import lmm_ate, make_crt, small_multisite

QUICK = dict(learning_rate=0.1, max_rounds=300, n_bootstrap=0)


def lmm_effect(td: TrialData, formula: str, reml: bool) -> float:
    return lmm_ate(td, formula, reml)[0]


def test_registry():
    assert get("gpboost") is GPBoost and GPBoost.designs == ("crt",)


def test_offset_is_the_ml_lmm_on_cluster_constant_columns(crt_constant):
    td, _ = crt_constant
    res = GPBoost(**QUICK, random_state=1).fit(td).predict(td)
    ref = lmm_effect(td, "outcome ~ V1 + treatment", reml=False)
    assert abs(res.info["beta_treatment"] - ref) < 2e-3


def test_projection_is_needed_against_absorption(crt_constant):
    """Plain GPBoost puts the cluster-level effect into the random intercept (mean CATE ~ 0);
    with the correction the mean CATE is the fixture's LMM estimate (0.60, SE 0.24)."""
    td, _ = crt_constant
    with_p = GPBoost(**QUICK, random_state=1).fit(td).predict(td)
    without = GPBoost(**QUICK, project_cluster_constant=False, random_state=1).fit(td).predict(td)
    ref = lmm_effect(td, "outcome ~ treatment + X1 + X2 + X3 + V1", reml=True)
    assert abs(without.point.mean()) < 0.2
    assert without.info["sigma2_b"] > 1.5 * with_p.info["sigma2_b"]
    assert abs(with_p.point.mean() - ref) < 0.15


def test_constant_effect_recovered_on_larger_trial():
    td, _ = make_crt(21, "constant", M=80)
    res = GPBoost(**QUICK, random_state=2).fit(td).predict(td)
    assert abs(res.point.mean() - 1.0) < 0.3


def test_linear_modifier_tracked(crt_linear):
    td, tau = crt_linear
    res = GPBoost(**QUICK, random_state=3).fit(td).predict(td)
    assert np.all(np.isfinite(res.point))
    assert np.corrcoef(res.point, tau)[0, 1] >= 0.8
    assert 1 < res.info["rounds"] < 300
    assert np.all(np.isnan(res.upper))


def test_bootstrap_intervals_contain_point_and_widen_with_fewer_clusters():
    widths = []
    for M in (40, 10):
        td, _ = make_crt(51, "linear", M=M)
        res = GPBoost(learning_rate=0.1, max_rounds=200, cv_folds=0, n_bootstrap=10,
                      random_state=4).fit(td).predict(td)
        assert res.draws.shape == (td.n, 10)
        assert np.mean((res.lower <= res.point) & (res.point <= res.upper)) >= 0.9
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


def test_defaults():
    d = GPBoost.default_params()
    assert (d["learning_rate"], d["max_depth"], d["max_rounds"], d["cv_folds"], d["n_threads"]) == (0.05, 3, 1000, 5, 1)
