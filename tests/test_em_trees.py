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
from clusterhte.methods.em_trees import (MEGB, MERF, cluster_constant_mask, cluster_projector,
                                         em_random_intercept, features)

from conftest import lmm_ate, make_crt, small_multisite

QUICK = {"merf": dict(n_estimators=50, max_iter=5, n_bootstrap=0),
         "megb": dict(n_estimators=100, max_iter=10, n_bootstrap=0)}
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


@pytest.mark.parametrize("name", ["merf", "megb"])
def test_projection_is_needed_against_absorption(name, crt_constant):
    """S-learner (the R original's form): without the correction the random intercept absorbs the
    cluster-level effect; the correction moves the mean CATE toward the LMM's estimate (1.00)."""
    td, _ = crt_constant
    cls, kw = CLASSES[name], dict(QUICK[name], learner_form="s")
    with_p = cls(**kw, project_cluster_constant=True, random_state=1).fit(td).predict(td).point.mean()
    without = cls(**kw, project_cluster_constant=False, random_state=1).fit(td).predict(td).point.mean()
    ref = lmm_effect(td)
    assert without < ref - 0.5
    assert with_p > without + 0.15


@pytest.mark.parametrize("name", ["merf", "megb"])
def test_default_t_learner_meets_constant_effect(name, crt_constant):
    """Acceptance: the mean CATE is within 0.3 of the true constant effect 1.0."""
    td, _ = crt_constant
    res = CLASSES[name](**QUICK[name], random_state=1).fit(td).predict(td)
    assert abs(res.point.mean() - 1.0) < 0.3
    assert abs(res.point.mean() - lmm_effect(td)) < 0.2


@pytest.mark.parametrize("name", ["merf", "megb"])
def test_constant_effect_recovered_on_larger_trial(name):
    td, tau = make_crt(21, "constant", M=80)
    res = CLASSES[name](**QUICK[name], random_state=2).fit(td).predict(td)
    assert abs(res.point.mean() - 1.0) < 0.3


@pytest.mark.parametrize("name", ["merf", "megb"])
def test_linear_modifier_tracked(name, crt_linear):
    td, tau = crt_linear
    res = CLASSES[name](**QUICK[name], random_state=3).fit(td).predict(td)
    assert np.all(np.isfinite(res.point))
    assert np.corrcoef(res.point, tau)[0, 1] >= 0.8
    assert np.all(np.isnan(res.lower)) and res.draws is None  # n_bootstrap = 0: no intervals


def test_new_clusters_and_reproducibility(crt_linear):
    td, _ = crt_linear
    new, _ = make_crt(99, "linear", M=6)
    new = replace(new, frame=new.frame.assign(cluster=new.frame["cluster"] + 1000))
    kw = dict(n_estimators=20, max_iter=3, n_bootstrap=3)
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
    kw = dict(n_estimators=100, max_iter=4, n_bootstrap=12)
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
    with pytest.raises(MethodError, match="X2"):
        m = MERF(n_estimators=10, max_iter=2, n_bootstrap=0).fit(td)
        m.predict(replace(td, frame=td.frame.drop(columns="X2"), individual_covariates=("X1", "X3")))


def test_defaults_are_paper_scale():
    assert MERF.default_params() == dict(n_estimators=300, min_samples_leaf=5, max_features=1.0,
                                         max_iter=20, tol=1e-3, project_cluster_constant=True,
                                         learner_form="t", n_bootstrap=50, n_threads=1)
    d = MEGB.default_params()
    assert (d["n_estimators"], d["learning_rate"], d["max_depth"], d["min_samples_leaf"], d["max_iter"],
            d["tol"]) == (500, 0.05, 3, 5, 100, 1e-3)
