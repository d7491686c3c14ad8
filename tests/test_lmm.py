"""LMM baseline: closed-form GLS at the fitted variance components, statsmodels MixedLM, acceptance."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from clusterhte.data.trial import TrialData
from clusterhte.methods import MethodError, get, make
from clusterhte.methods.lmm import LMM, Z975

from conftest import make_crt


def test_registry_and_params():
    assert get("lmm") is LMM
    est = make("lmm", {"interactions": ["X1"]}, random_state=3)
    assert est.get_params() == {"interactions": ["X1"], "reml": True, "ddf": "kenward-roger",
                                "spline_knots": 4, "spline_alpha": 0.05, "min_unique": 10}
    assert LMM.default_params() == {"interactions": None, "reml": True, "ddf": "kenward-roger",
                                    "spline_knots": 4, "spline_alpha": 0.05, "min_unique": 10}
    with pytest.raises(MethodError, match="'ddf'"):
        LMM(ddf="residual")
    with pytest.raises(MethodError, match="kenward-roger.*reml"):
        LMM(reml=False)
    LMM(reml=False, ddf="satterthwaite")
    for bad in (1, 2, 8, True, "4"):
        with pytest.raises(MethodError, match="'spline_knots' must be 0 .* or one of \\[3, 4, 5, 6, 7\\]"):
            LMM(spline_knots=bad)
    with pytest.raises(MethodError, match="'min_unique'"):
        LMM(min_unique=1)
    for bad in (0, 1, 1.5, -0.1, True, "0.05"):
        with pytest.raises(MethodError, match="'spline_alpha' must be null .* or a level in \\(0, 1\\)"):
            LMM(spline_alpha=bad)


def test_point_estimates_equal_closed_form_gls(crt_linear):
    td, _ = crt_linear
    est = LMM(spline_knots=0).fit(td)
    r = est.result_
    X = est._design(td)
    y = td.outcome
    codes = td.cluster_codes
    Z = (codes[:, None] == np.arange(codes.max() + 1)[None, :]).astype(float)
    V = r.sigma2 * np.eye(td.n) + r.G[0, 0] * Z @ Z.T
    Vi = np.linalg.inv(V)
    cov = np.linalg.inv(X.T @ Vi @ X)
    beta = cov @ X.T @ Vi @ y
    np.testing.assert_allclose(r.beta, beta, atol=1e-6)
    np.testing.assert_allclose(r.cov_beta, cov, rtol=1e-6, atol=1e-10)
    res = LMM(ddf="none", spline_knots=0).fit(td).predict(td)
    # CATE = beta_A + x'beta_{A:X} + v'beta_{A:V}, z interval from c' Sigma c (ddf = "none")
    C = np.column_stack([np.zeros(td.n), np.ones(td.n), np.zeros((td.n, 4)), td.X(["X1", "X2", "X3", "V1"])])
    np.testing.assert_allclose(res.point, C @ beta, atol=1e-6)
    se = np.sqrt(np.einsum("ij,jk,ik->i", C, cov, C))
    np.testing.assert_allclose(res.upper - res.point, Z975 * se, rtol=1e-6)
    np.testing.assert_allclose(res.point - res.lower, Z975 * se, rtol=1e-6)
    cbar = C.mean(axis=0)
    ate_se = np.sqrt(cbar @ cov @ cbar)
    lo, hi = res.info["ate_interval"]
    assert res.ate()[0] == pytest.approx(cbar @ beta, abs=1e-6)
    assert (hi - lo) / 2 == pytest.approx(Z975 * ate_se, rel=1e-6)
    # Satterthwaite: same SE, t quantile with the reported df (between 1 and the cluster count)
    sat = LMM(ddf="satterthwaite", spline_knots=0).fit(td).predict(td)
    np.testing.assert_allclose(sat.info["se"], se, rtol=1e-6)
    q = stats.t.ppf(0.975, sat.info["df"])
    np.testing.assert_allclose(sat.upper - sat.point, q * se, rtol=1e-6)
    assert 1 <= sat.info["ate_df"] <= 30 and np.all(sat.info["df"] >= 1)


def test_no_covariates_matches_statsmodels():
    td, _ = make_crt(5, "constant")
    bare = TrialData(td.frame[["cluster", "treatment", "outcome"]].copy(), "crt", name="bare").validate()
    res = LMM(ddf="none").fit(bare).predict(bare)
    assert np.ptp(res.point) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = smf.mixedlm("outcome ~ treatment", bare.frame, groups=bare.frame["cluster"]).fit(reml=True)
    assert res.point[0] == pytest.approx(ref.params["treatment"], abs=1e-5)
    assert res.info["tau2"] == pytest.approx(float(ref.cov_re.iloc[0, 0]), rel=1e-3)
    assert res.info["sigma2"] == pytest.approx(ref.scale, rel=1e-4)
    lo, hi = res.info["ate_interval"]
    assert (hi - lo) / 2 == pytest.approx(Z975 * ref.bse["treatment"], rel=1e-3)


def test_interactions_subset_and_bad_name(crt_linear):
    td, _ = crt_linear
    res = LMM(interactions=[], spline_knots=0).fit(td).predict(td)
    assert np.ptp(res.point) == pytest.approx(0.0, abs=1e-12)
    est = LMM(interactions=["X1"], spline_knots=0).fit(td)
    assert list(est.result_.beta.shape) == [2 + 4 + 1]
    with pytest.raises(MethodError, match="interactions.*'X9'"):
        LMM(interactions=["X9"]).fit(td)
    with pytest.raises(MethodError, match="interactions"):
        LMM(interactions="X1").fit(td)


def test_acceptance_linear(crt_linear):
    td, truth = crt_linear
    res = LMM().fit(td).predict(td)
    assert np.all(np.isfinite(res.point)) and np.all(np.isfinite(res.lower)) and np.all(np.isfinite(res.upper))
    assert np.corrcoef(res.point, truth)[0, 1] >= 0.8
    assert np.all(res.lower < res.point) and np.all(res.point < res.upper)


def test_acceptance_constant_fixture(crt_constant):
    td, _ = crt_constant
    assert abs(LMM().fit(td).predict(td).point.mean() - 1.0) < 0.3


def test_acceptance_constant_other_draw():
    td, _ = make_crt(6, "constant")
    res = LMM().fit(td).predict(td)
    assert abs(res.point.mean() - 1.0) < 0.3
    lo, hi = res.info["ate_interval"]
    assert lo < 1.0 < hi


def test_new_clusters_and_reproducible(crt_linear):
    td, _ = crt_linear
    new, truth = make_crt(99, "linear", M=6, size=5)
    new = TrialData(new.frame.assign(cluster=new.frame["cluster"] + 1000), "crt", new.individual_covariates,
                    new.cluster_covariates, name="new")
    a = LMM(random_state=1).fit(td).predict(new)
    b = LMM(random_state=2).fit(td).predict(new)
    assert a.point.shape == (30,) and np.all(np.isfinite(a.point))
    np.testing.assert_array_equal(a.point, b.point)
    assert np.corrcoef(a.point, truth)[0, 1] > 0.8


def test_missing_column_in_test_table(crt_linear):
    td, _ = crt_linear
    est = LMM().fit(td)
    bad = TrialData(td.frame.drop(columns="X2"), "crt", ("X1", "X3"), ("V1",), name="nox2")
    with pytest.raises(MethodError, match="X2"):
        est.predict(bad)


def test_collinear_covariates_are_dropped_with_a_warning(crt_linear):
    """The lme4 formula (``spline_knots = 0``): an exactly collinear covariate is dropped (with its interaction), as lme4 does; a nearly
    collinear one that passes lme4's rank tolerance but makes X'X numerically singular is an error."""
    from clusterhte.data.trial import TrialDataError
    from clusterhte.mixed.design import AliasedColumnsWarning

    td, _ = crt_linear
    f = td.frame.assign(X4=2 * td.frame["X1"])
    bad = TrialData(f, "crt", ("X1", "X2", "X3", "X4"), ("V1",), name="collinear")
    with pytest.warns(AliasedColumnsWarning, match=r"collinear.*\['X4', 'treatment:X4'\]"):
        res = LMM(spline_knots=0).fit(bad).predict(bad)
    ref = LMM(spline_knots=0).fit(td).predict(td)
    np.testing.assert_allclose(res.point, ref.point, atol=1e-8)
    assert res.info["dropped"] == ["X4", "treatment:X4"] and res.info["beta"]["X4"] == 0.0
    rng = np.random.default_rng(0)
    near = TrialData(td.frame.assign(X4=2 * td.frame["X1"] + 1e-6 * rng.normal(size=td.n)), "crt",
                     ("X1", "X2", "X3", "X4"), ("V1",), name="nearly collinear")
    with pytest.raises(TrialDataError, match=r"nearly collinear.*rank deficient.*\['X4', 'treatment:X4'\]"):
        LMM(spline_knots=0).fit(near)


def test_ate_interval_coverage_over_replicates():
    hits = []
    for seed in range(300, 320):
        td, truth = make_crt(seed, "linear", M=20, size=10)
        lo, hi = LMM().fit(td).predict(td).info["ate_interval"]
        hits.append(lo <= truth.mean() <= hi)
    assert np.mean(hits) >= 0.8


def test_outcome_predictions_marginal_and_conditional(crt_linear):
    """Marginal = X'beta at the observed arm; conditional adds the cluster's BLUP (closed form:
    tau2 n_j / (tau2 n_j + sigma2) times the cluster mean of the marginal residuals)."""
    td, _ = crt_linear
    est = LMM().fit(td)
    o = est.predict_outcome(td)
    np.testing.assert_allclose(o.marginal, est._design(td) @ est.result_.beta)
    r = td.outcome - o.marginal
    codes = td.cluster_codes
    nj = np.bincount(codes)
    t2, s2 = est.result_.G[0, 0], est.result_.sigma2
    blup = t2 * nj / (t2 * nj + s2) * np.bincount(codes, weights=r) / nj
    np.testing.assert_allclose(o.conditional - o.marginal, blup[codes], atol=1e-8)
    assert o.replicates is None


def test_restricted_cubic_splines_match_lme4_with_natural_splines():
    """``spline_knots = 4`` against lme4 + pbkrtest with ``splines::ns`` at the same knots (the same
    function space; tests/data/lmm_rcs_reference.R): every row's CATE, and the ATE's estimate,
    Kenward-Roger SE and df."""
    import pandas as pd

    from pathlib import Path

    data = Path(__file__).parent / "data"
    d = pd.read_csv(data / "lmm_small_trials.csv")
    d = d[d["dataset"] == "interior"].reset_index(drop=True)
    ref = pd.read_csv(data / "lmm_rcs_reference.csv")
    td = TrialData(d.drop(columns="dataset"), "crt", ("X1", "X2", "X3", "X4"), ("V1", "V2"), (),
                   name="interior").validate()
    est = LMM(spline_knots=4, spline_alpha=None).fit(td)
    assert sorted(est.knots_) == ["X1", "X2", "X4"]          # X3 is binary: linear
    assert len(est.names_) == 2 + 2 * 12
    res = est.predict(td)
    rows = ref[ref["row"] > 0].sort_values("row")
    np.testing.assert_allclose(res.point, rows["cate"], atol=1e-6)
    ate = ref[ref["row"] == 0].iloc[0]
    assert res.ate()[0] == pytest.approx(ate["cate"], abs=1e-6)
    assert res.info["ate_se"] == pytest.approx(ate["se"], rel=1e-5)
    assert res.info["ate_df"] == pytest.approx(ate["df"], rel=1e-4)


def test_restricted_cubic_spline_basis_is_harrells():
    """Linear beyond the outer knots, cubic in between, continuous second derivative; zero left of
    the first knot (rcspline.eval's definition)."""
    from clusterhte.methods.splines import rcs_basis, rcs_knots

    x = np.linspace(-4, 4, 2001)
    t = rcs_knots(np.random.default_rng(1).normal(size=500), 5)
    B = rcs_basis(x, t)
    assert B.shape == (x.size, 3)
    assert np.all(B[x < t[0]] == 0)
    d2 = np.diff(B, 2, axis=0)
    assert np.abs(d2[x[1:-1] > t[-1] + 0.01]).max() < 1e-12      # linear right of the last knot
    assert np.abs(np.diff(d2, axis=0)).max() < 1e-5               # no jump in the second derivative
    with pytest.raises(ValueError, match="not distinct"):
        rcs_knots(np.r_[np.zeros(90), np.arange(10.0)], 4)
    with pytest.raises(ValueError, match="3-7 knots"):
        rcs_knots(x, 2)


def test_splines_are_refit_free_on_new_rows(crt_linear):
    """New clusters are predicted with the training knots; continuous covariates only."""
    td, _ = crt_linear
    est = LMM(spline_knots=3).fit(td)
    assert sorted(est.knots_) == ["X1", "X2"]
    half = td.subset(np.arange(td.n) < 100)
    np.testing.assert_allclose(est.predict(half).point, est.predict(td).point[:100])
    from dataclasses import replace

    frame = td.frame.copy()
    frame.loc[frame.index[:500], "X1"] = 0.0
    tied = replace(td, frame=frame)
    with pytest.raises(MethodError, match="covariate 'X1': the 3 knot quantiles .* not distinct"):
        LMM(spline_knots=3, spline_alpha=None).fit(tied)
    est = LMM(spline_knots=3).fit(tied)            # under selection: X1 stays linear, with the reason
    assert "X1" not in est.knots_ and sorted(est.knots_) == ["X2"]
    note = [t for t in est.selection_ if t["covariate"] == "X1"]
    assert len(note) == 1 and "not distinct" in note[0]["note"] and not note[0]["kept"]


def _battery_trial(scenario, rep):
    from clusterhte import seeds
    from clusterhte.simulate.battery import simulate

    return simulate(scenario, seeds.rng(20231, "battery", scenario, rep))


def test_function_selection_likelihood_ratios_match_statsmodels_ml_fits():
    """Each spline test is 2 (llf_full - llf_reduced) of two ML fits: recomputed with statsmodels'
    MixedLM (an independent ML fit) on the same designs, for the interaction and main-effect blocks
    of X4 on the battery's nonlinear scenario; the kept blocks are those with p < 0.05."""
    import statsmodels.api as sm

    trial, _ = _battery_trial("nonlinear", 0)
    est = LMM().fit(trial)
    tests = {(t["covariate"], t["part"]): t for t in est.selection_}
    assert len(tests) == 6 and all(t["df"] == 2 for t in tests.values())
    assert sorted(c for (c, part), t in tests.items() if part == "interaction" and t["p"] < 0.05) \
        == sorted(est.inter_knots_)
    assert sorted(c for (c, part), t in tests.items() if part == "main" and t["p"] < 0.05) == sorted(est.main_knots_)

    def llf(main, inter):
        X = est._design(trial, main=main, inter=inter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sm.MixedLM(trial.outcome, X, groups=trial.cluster).fit(reml=False).llf

    full = llf(est.knots_, est.knots_)
    for (c, part) in (("X4", "interaction"), ("X1", "main")):
        main = {k: v for k, v in est.knots_.items() if not (part == "main" and k == c)}
        inter = {k: v for k, v in est.knots_.items() if not (part == "interaction" and k == c)}
        lr = 2 * (full - llf(main, inter))
        assert tests[(c, part)]["lr"] == pytest.approx(lr, rel=1e-4, abs=1e-4)
        assert tests[(c, part)]["p"] == pytest.approx(stats.chi2.sf(lr, 2), rel=1e-3, abs=1e-6)


def test_function_selection_keeps_strong_curvature_and_holds_its_level():
    """A known answer and a level: with tau = 0.5 + 1.5 sin(pi X4) the interaction spline of X4 is
    kept (its test has p < 1e-6) and the CATE tracks the curve; on 30 trials of the linear
    scenario the interaction tests reject at about their level (90 tests, 5% expected; the bound
    is binomial 0.05 + 3 SE), and the kept model is then lme4's linear one."""
    from clusterhte import seeds
    from clusterhte.simulate.battery import simulate

    trial, tau = _battery_trial("nonlinear", 1)
    x4 = trial.frame["X4"].to_numpy()
    curved = TrialData(trial.frame.assign(outcome=trial.outcome + trial.treatment * np.sin(np.pi * x4)), "crt",
                       trial.individual_covariates, trial.cluster_covariates, name="curved")
    res = LMM().fit(curved).predict(curved)
    t4 = [t for t in res.info["spline_tests"] if t["covariate"] == "X4" and t["part"] == "interaction"][0]
    assert t4["p"] < 1e-6 and "X4" in res.info["splines"]["interaction"]
    truth = tau + np.sin(np.pi * x4)
    assert np.mean((res.lower <= truth) & (truth <= res.upper)) >= 0.85

    rejected, total = 0, 0
    for r in range(30):
        tr, _ = simulate("linear", seeds.rng(777, "fsp-level", r))
        est = LMM().fit(tr)
        inter = [t for t in est.selection_ if t["part"] == "interaction"]
        rejected += sum(t["p"] < 0.05 for t in inter)
        total += len(inter)
        if not est.main_knots_ and not est.inter_knots_:
            ref = LMM(spline_knots=0).fit(tr)
            np.testing.assert_allclose(est.beta_, ref.beta_, atol=1e-10)
    assert total == 90 and rejected / total <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / total)


def test_function_selection_can_be_switched_off():
    """``spline_alpha = None`` keeps every spline term; ``spline_knots = 0`` is lme4's formula
    (no tests)."""
    trial, _ = _battery_trial("nonlinear", 0)
    every = LMM(spline_alpha=None).fit(trial)
    assert every.selection_ == [] and sorted(every.inter_knots_) == ["X1", "X2", "X4"]
    assert len(every.names_) == 2 + 2 * 12
    lin = LMM(spline_knots=0).fit(trial)
    assert lin.selection_ == [] and len(lin.names_) == 2 + 2 * 6


def test_fit_log_names_the_kept_spline_terms():
    from clusterhte.stages.fitting import fit_replicates

    trial, _ = _battery_trial("nonlinear", 0)
    log = io.StringIO()
    fit_replicates([(0, trial, {"train": trial})], study="trials", cell="x", method="lmm", params={},
                   root_seed=1, log=log)
    assert "ok (spline terms kept: interaction X2, interaction X4)" in log.getvalue()
    assert LMM(spline_knots=0).fit(trial).fit_note == ""


def test_function_selection_needs_ten_rows_per_column():
    """Below 10 rows per column of the model with every spline term the tests are not run and the
    model is lme4's linear one (the LR tests are ML approximations)."""
    trial, _ = _battery_trial("nonlinear", 0)
    few = trial.subset(np.isin(trial.cluster_codes, np.arange(12)))
    assert few.n < 260
    est = LMM().fit(few)
    assert not est.main_knots_ and not est.inter_knots_
    assert all("fewer than 10 per column" in t["note"] and "(26 columns)" in t["note"] for t in est.selection_)
    np.testing.assert_allclose(est.beta_, LMM(spline_knots=0).fit(few).beta_, atol=1e-10)
