"""GAMM: penalised-REML core against OLS and mixed-model fits, CATE contrasts, acceptance."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from clusterhte.data.trial import TrialData
from clusterhte.methods import MethodError, get
from clusterhte.methods.gamm import GAMM, Z975, penalized_fit, reml_criterion
from clusterhte.mixed.reml import fit_lmm

from conftest import make_crt


def _dummies(codes):
    return (codes[:, None] == np.arange(codes.max() + 1)[None, :]).astype(float)


def test_no_penalty_is_ols(crt_linear):
    td, _ = crt_linear
    X = np.column_stack([np.ones(td.n), td.treatment, td.X()])
    fit = penalized_fit(X, td.outcome, [])
    ref, *_ = np.linalg.lstsq(X, td.outcome, rcond=None)
    np.testing.assert_allclose(fit.beta, ref, atol=1e-10)
    resid = td.outcome - X @ ref
    assert fit.phi == pytest.approx(resid @ resid / (td.n - X.shape[1]), rel=1e-10)
    np.testing.assert_allclose(fit.Vp, fit.phi * np.linalg.inv(X.T @ X), rtol=1e-8)


def test_single_ridge_block_is_reml_lmm(crt_linear):
    td, _ = crt_linear
    Xf = np.column_stack([np.ones(td.n), td.treatment, td.X()])
    Z = _dummies(td.cluster_codes)
    fit = penalized_fit(np.column_stack([Xf, Z]), td.outcome, [(slice(Xf.shape[1], None), np.eye(Z.shape[1]))])
    ref = fit_lmm(td.outcome, Xf, td.cluster, reml=True)
    p = Xf.shape[1]
    np.testing.assert_allclose(fit.beta[:p], ref.beta, atol=1e-6)
    assert fit.phi == pytest.approx(ref.sigma2, rel=1e-6)
    assert fit.phi / fit.lambdas[0] == pytest.approx(ref.G[0, 0], rel=1e-5)
    # the posterior covariance of the fixed part equals the GLS covariance (X'V^-1 X)^-1
    np.testing.assert_allclose(fit.Vp[:p, :p], ref.cov_beta, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(fit.beta[p:], ref.blups[:, 0], atol=1e-6)


def test_single_ridge_block_matches_statsmodels_variance_components():
    td, _ = make_crt(3, "linear", M=12, size=8)
    Xf = np.column_stack([np.ones(td.n), td.treatment, td.X(["X1"])])
    Z = _dummies(td.cluster_codes)
    fit = penalized_fit(np.column_stack([Xf, Z]), td.outcome, [(slice(3, None), np.eye(12))])
    frame = td.frame.assign(one=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sm.MixedLM.from_formula("outcome ~ treatment + X1", data=frame, groups="one",
                                      re_formula="0", vc_formula={"cl": "0 + C(cluster)"}).fit(reml=True)
    np.testing.assert_allclose(fit.beta[:3], ref.fe_params.to_numpy(), atol=1e-4)
    assert fit.phi == pytest.approx(ref.scale, rel=1e-4)
    assert fit.phi / fit.lambdas[0] == pytest.approx(float(ref.vcomp[0]), rel=1e-3)


def test_reml_gradient_is_exact(crt_linear):
    """The analytic REML gradient agrees with central differences of the criterion; at the fitted
    smoothing parameters it vanishes for interior ones."""
    td, _ = crt_linear
    Xf = np.column_stack([np.ones(td.n), td.treatment, td.X()])
    rng = np.random.default_rng(0)
    B = rng.normal(size=(td.n, 5))
    S = np.diff(np.eye(5), 2, axis=0).T @ np.diff(np.eye(5), 2, axis=0)
    X = np.column_stack([Xf, B, _dummies(td.cluster_codes)])
    blocks = [(slice(6, 11), S), (slice(11, None), np.eye(30))]
    rho = np.array([0.3, 1.2])
    _, g = reml_criterion(X, td.outcome, blocks, rho)
    h = 1e-5
    num = [(reml_criterion(X, td.outcome, blocks, rho + h * e)[0] - reml_criterion(X, td.outcome, blocks, rho - h * e)[0]) / (2 * h)
           for e in np.eye(2)]
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7)
    fit = penalized_fit(X, td.outcome, blocks)
    rho_hat = np.log(fit.lambdas)
    _, g_hat = reml_criterion(X, td.outcome, blocks, rho_hat)
    interior = (rho_hat > -14.9) & (rho_hat < 19.9)
    assert fit.converged and interior[1]
    assert np.all(np.abs(g_hat[interior]) < 1e-4)


def test_cate_is_design_contrast(crt_linear):
    td, _ = crt_linear
    est = GAMM(ddf="none").fit(td)
    res = est.predict(td)
    p = est.p_fixed_
    C = est.terms_.design(td, 1) - est.terms_.design(td, 0)
    np.testing.assert_allclose(res.point, C @ est.fit_.beta[:p], atol=1e-12)
    se = np.sqrt(np.einsum("ij,jk,ik->i", C, est.fit_.Vp[:p, :p], C))
    np.testing.assert_allclose(res.upper - res.point, Z975 * se, rtol=1e-10)
    sat = GAMM().fit(td).predict(td)
    np.testing.assert_allclose(sat.info["se"], se, rtol=1e-8)
    np.testing.assert_allclose(sat.upper - sat.point, stats.t.ppf(0.975, sat.info["df"]) * se, rtol=1e-8)
    # the contrast of the intercept, main effects and plain smooths is zero; binary/cluster
    # covariates enter linearly
    assert np.all(C[:, 0] == 0) and np.all(C[:, 1] == 1)
    assert res.info["linear_terms"] == ["X3", "V1"] and res.info["smooth_terms"] == ["X1", "X2"]
    lo, hi = res.info["ate_interval"]
    assert lo < res.point.mean() < hi


def test_without_smooths_equals_lmm():
    """Linear covariates only (min_unique_smooth above n): GAMM = the REML LMM with interactions."""
    td, _ = make_crt(4, "linear")
    res = GAMM(min_unique_smooth=10_000, ddf="none").fit(td).predict(td)
    lmm = get("lmm")(ddf="none").fit(td).predict(td)
    np.testing.assert_allclose(res.point, lmm.point, atol=1e-5)
    np.testing.assert_allclose(res.upper - res.lower, lmm.upper - lmm.lower, rtol=1e-4)
    # and the GAMM's Satterthwaite df are the LMM's with the expected information (= Kenward-Roger's df)
    res = GAMM(min_unique_smooth=10_000).fit(td).predict(td)
    lmm = get("lmm")().fit(td).predict(td)
    np.testing.assert_allclose(res.info["df"], lmm.info["df"], rtol=1e-3)
    assert res.info["ate_df"] == pytest.approx(lmm.info["ate_df"], rel=1e-3)


def test_acceptance_linear(crt_linear):
    td, truth = crt_linear
    for method in ("REML", "GCV"):
        res = GAMM(method=method).fit(td).predict(td)
        assert np.all(np.isfinite(res.point)) and np.all(np.isfinite(res.lower))
        assert np.corrcoef(res.point, truth)[0, 1] >= 0.8
        assert np.mean((res.lower <= truth) & (truth <= res.upper)) > 0.8


def test_acceptance_constant_fixture(crt_constant):
    td, _ = crt_constant
    assert abs(GAMM().fit(td).predict(td).point.mean() - 1.0) < 0.3


def test_acceptance_constant(crt_constant):
    """The random intercept does not absorb the treatment effect: the mean CATE matches the
    correctly specified LMM on the fixture, and the truth on another draw."""
    td, _ = crt_constant
    lmm = get("lmm")(interactions=[]).fit(td).predict(td).point.mean()
    assert abs(GAMM().fit(td).predict(td).point.mean() - lmm) < 0.1
    td6, _ = make_crt(6, "constant")
    assert abs(GAMM().fit(td6).predict(td6).point.mean() - 1.0) < 0.3


def test_new_clusters_reproducible_and_errors(crt_linear):
    td, _ = crt_linear
    new, truth = make_crt(98, "linear", M=4, size=6)
    new = TrialData(new.frame.assign(cluster=new.frame["cluster"] + 500, X1=new.frame["X1"] * 3), "crt",
                    new.individual_covariates, new.cluster_covariates, name="new")
    a = GAMM(random_state=1).fit(td).predict(new)
    b = GAMM(random_state=1).fit(td).predict(new)
    assert np.all(np.isfinite(a.point)) and np.all(np.isfinite(a.upper))
    np.testing.assert_array_equal(a.point, b.point)
    with pytest.raises(MethodError, match="'method'"):
        GAMM(method="ML").fit(td)
    with pytest.raises(MethodError, match="'n_basis'"):
        GAMM(n_basis=2).fit(td)


def test_ate_interval_coverage_over_replicates():
    """Repeated sampling: the Wald ATE interval of GAMM covers the true ATE (1.0) in most of 20 draws."""
    hits = []
    for seed in range(200, 220):
        td, truth = make_crt(seed, "linear", M=20, size=10)
        lo, hi = GAMM().fit(td).predict(td).info["ate_interval"]
        hits.append(lo <= truth.mean() <= hi)
    assert np.mean(hits) >= 0.8


@pytest.mark.slow
def test_paper_scale_coverage_and_pehe():
    """200 draws of the 30 x 20 linear-effect trial: CATE-interval coverage near 95%, small PEHE."""
    cover, pehe = [], []
    for seed in range(1000, 1200):
        td, truth = make_crt(seed, "linear")
        res = GAMM().fit(td).predict(td)
        cover.append(np.mean((res.lower <= truth) & (truth <= res.upper)))
        pehe.append(np.sqrt(np.mean((res.point - truth) ** 2)))
    assert 0.88 <= np.mean(cover) <= 0.99
    assert np.mean(pehe) < 0.3


def test_ddf_options(crt_linear):
    """ddf: conditional Satterthwaite (default), unconditional (smoothing parameters estimated too:
    never more df for a row than conditional here, where the smooths are near-linear), z."""
    td, _ = crt_linear
    with pytest.raises(MethodError, match="'ddf'"):
        GAMM(ddf="kenward-roger")
    cond = GAMM().fit(td).predict(td)
    unc = GAMM(ddf="satterthwaite-unconditional").fit(td).predict(td)
    z = GAMM(ddf="none").fit(td).predict(td)
    np.testing.assert_allclose(cond.info["se"], z.info["se"], rtol=1e-12)
    assert np.all(np.isinf(z.info["df"])) and z.info["ate_df"] == np.inf
    assert np.all(cond.info["df"] >= 1) and 10 < cond.info["ate_df"] < 30   # 30 clusters
    assert np.median(unc.info["df"]) <= np.median(cond.info["df"])
    assert np.all(z.upper - z.lower <= cond.upper - cond.lower + 1e-12)
