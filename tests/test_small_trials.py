"""Small-trial inference of the LMM and GAMM on the scenario battery (issue 11, item 5).

The battery's ``small`` scenario: 10 clusters (5 per arm) of sizes 3-80, linear effect modifiers
including the binary cluster covariate V2 (so ``A x V2`` is aliased in about 1 trial in 8).
Trials come from the battery's own seeds (``seeds.rng(20231, "battery", "small", r)``, as
``python -m clusterhte.evaluate.battery``); a draw the battery's simulator rejects (V2 constant
in all 10 clusters, e.g. r = 29) is skipped and the next one taken.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from clusterhte import methods, seeds
from clusterhte.simulate.battery import simulate


def battery_trials(scenario: str, n: int, start: int = 0):
    """The first ``n`` trials of ``scenario`` the battery's simulator accepts, from rep ``start``."""
    out, r = [], start
    while len(out) < n:
        try:
            out.append(simulate(scenario, seeds.rng(20231, "battery", scenario, r)))
        except ValueError:
            pass
        r += 1
    return out


def run(method: str, trials, params=None):
    """Per fit: (ATE covered, pointwise coverage, ATE df, max SE). Any exception fails the test."""
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for trial, tau in trials:
            res = methods.make(method, params).fit(trial).predict(trial)
            _, lo, hi = res.ate()
            assert np.all(np.isfinite(res.lower)) and np.all(np.isfinite(res.upper))
            rows.append((lo <= tau.mean() <= hi, np.mean((res.lower <= tau) & (tau <= res.upper)),
                         res.info["ate_df"], float(np.max(res.info["se"]))))
    return np.array(rows, dtype=float)


def test_lmm_100_fits_at_10_clusters_and_ate_coverage():
    """100 LMM fits at M = 10 without an error; Kenward-Roger ATE coverage >= 0.92 (z: 0.86)."""
    out = run("lmm", battery_trials("small", 100))
    print(f"\nlmm small, 100 trials: ATE coverage {out[:, 0].mean():.3f}, pointwise {out[:, 1].mean():.3f}, "
          f"median ATE df {np.median(out[:, 2]):.1f}, max SE {out[:, 3].max():.2f}")
    assert out[:, 0].mean() >= 0.92
    assert 0.85 <= out[:, 1].mean() <= 0.995
    assert 2 < np.median(out[:, 2]) < 8          # about 10 clusters - 6 cluster-level coefficients
    assert out[:, 3].max() < 10                  # no near-singular fit with a huge SE


def test_gamm_fits_at_10_clusters():
    """GAMM at M = 10 without an error, including trials with an aliased A x V2 (reps 3 and 4)."""
    out = run("gamm", battery_trials("small", 12))
    assert np.all(out[:, 2] < 10) and out[:, 3].max() < 10


@pytest.mark.slow
def test_gamm_100_fits_at_10_clusters_and_ate_coverage():
    out = run("gamm", battery_trials("small", 100))
    print(f"\ngamm small, 100 trials: ATE coverage {out[:, 0].mean():.3f}, pointwise {out[:, 1].mean():.3f}, "
          f"median ATE df {np.median(out[:, 2]):.1f}, max SE {out[:, 3].max():.2f}")
    assert out[:, 0].mean() >= 0.92
    assert 0.85 <= out[:, 1].mean() <= 0.995
    assert out[:, 3].max() < 10


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lmm", "gamm"])
def test_ate_coverage_200_trials(method):
    """The larger version: 200 trials at M = 10."""
    out = run(method, battery_trials("small", 200))
    print(f"\n{method} small, 200 trials: ATE coverage {out[:, 0].mean():.3f}, pointwise {out[:, 1].mean():.3f}")
    assert out[:, 0].mean() >= 0.92


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["linear", "nonlinear"])
@pytest.mark.parametrize("method", ["lmm", "gamm"])
def test_pointwise_coverage_on_battery(method, scenario):
    """Pointwise coverage of the 95% intervals over 20 battery trials (issue 11: in [0.85, 0.995]).
    The LMM at its default (spline terms kept by the function-selection test): the paper's linear
    form covers the nonlinear CATE in 0.81 of rows (tests/test_battery.py)."""
    out = run(method, battery_trials(scenario, 20))
    cov = out[:, 1].mean()
    print(f"\n{method} {scenario}, 20 trials: pointwise coverage {cov:.3f}, ATE coverage {out[:, 0].mean():.3f}")
    assert 0.85 <= cov <= 0.995


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::clusterhte.mixed.design.AliasedColumnsWarning")
def test_lmm_ate_coverage_when_cluster_variance_is_estimated_as_zero():
    """10 clusters with ICC 0.05: the cluster variance is estimated as 0 in about 1 fit in 5. There
    the z interval (cluster variance ignored) covers the ATE in about 0.6 of fits; the t intervals
    with cluster-level df (expected information at the boundary) stay near nominal."""
    from clusterhte.simulate.battery import Scenario

    sc = Scenario("small-icc05", "linear", icc=0.05, n_clusters=10, size_lo=3, size_hi=80)
    hits = {d: [] for d in ("none", "satterthwaite", "kenward-roger")}
    zero = []
    for r in range(300):
        try:
            trial, tau = simulate(sc, np.random.default_rng(10_000 + r))
        except ValueError:
            continue
        for d in hits:
            res = methods.make("lmm", {"ddf": d}).fit(trial).predict(trial)
            _, lo, hi = res.ate()
            hits[d].append(lo <= tau.mean() <= hi)
        zero.append(res.info["tau2"] < 1e-8)
    zero = np.array(zero)
    cov = {d: (np.mean(v), np.mean(np.array(v)[zero])) for d, v in hits.items()}
    print(f"\n{zero.size} fits, cluster variance 0 in {zero.sum()}; ATE coverage (all, variance 0): {cov}")
    assert zero.sum() >= 30
    assert cov["kenward-roger"][0] >= 0.93 and cov["kenward-roger"][1] >= 0.85
    assert cov["satterthwaite"][0] >= 0.93 and cov["satterthwaite"][1] >= 0.85
    assert cov["none"][1] < 0.75


# --------------------------------------------------------------------------- saturated cluster level

def _six_clusters(seed: int = 0):
    """6 clusters (3 per arm) with the battery's two cluster covariates: intercept, treatment, V1,
    V2 and their two treatment interactions are 6 independent cluster-level columns."""
    from clusterhte.simulate.battery import Scenario

    sc = Scenario("six", "linear", n_clusters=6, size_lo=2, size_hi=10)
    return simulate(sc, np.random.default_rng(seed))


def test_restricted_likelihood_is_flat_in_the_cluster_variance_when_the_cluster_level_is_saturated():
    """The reason for refusing such a fit: with the cluster-level columns spanning all 6 cluster
    indicators, the REML criterion does not depend on the cluster variance at all; drop the two
    interactions (2 between-cluster df left) and it does."""
    from clusterhte.mixed import reml
    from clusterhte.mixed.design import between_cluster_df

    trial, _ = _six_clusters()
    A, Xcov = trial.treatment, trial.X()
    X = np.column_stack([np.ones(trial.n), A, Xcov, A[:, None] * Xcov])   # the LMM's design
    codes = trial.cluster_codes
    Z = np.ones((trial.n, 1))
    for cols, df in ((X, 0), (X[:, :-2], 2)):
        assert between_cluster_df(cols, codes)[0] == df
        st = reml.sufficient_stats(trial.outcome, cols, codes, Z, 6)
        devs = [reml._deviance(np.array([t]), st, True, grad=False) for t in (0.05, 0.5, 3.0)]
        spread = max(devs) - min(devs)
        assert (spread < 1e-8) if df == 0 else (spread > 0.1)


@pytest.mark.parametrize("method", ["lmm", "gamm"])
def test_saturated_cluster_level_is_refused_with_the_columns_named(method):
    from clusterhte.data.trial import TrialDataError

    trial, _ = _six_clusters()
    with pytest.raises(TrialDataError, match=r"6 clusters and the model 6 independent cluster-level "
                                             r"columns \(\(Intercept\), treatment, V1, V2, treatment:V1, "
                                             r"treatment:V2\)"):
        methods.make(method, {}).fit(trial)


@pytest.mark.filterwarnings("ignore::clusterhte.mixed.design.AliasedColumnsWarning")
def test_lmm_without_cluster_interactions_fits_six_clusters_and_covers():
    """The message's remedy works: the individual covariates interact, V1 and V2 are main effects
    only (4 cluster-level columns, 2 df); over 200 such trials the ATE interval covers."""
    from clusterhte.simulate.battery import Scenario

    sc = Scenario("six", "x1", n_clusters=6, size_lo=2, size_hi=10)
    hits, dfs = [], []
    for r in range(200):
        trial, tau = simulate(sc, np.random.default_rng(500 + r))
        res = methods.make("lmm", {"interactions": ["X1", "X2", "X3", "X4"]}).fit(trial).predict(trial)
        _, lo, hi = res.ate()
        hits.append(lo <= tau.mean() <= hi)
        dfs.append(res.info["ate_df"])
    print(f"\n6 clusters, 200 trials: ATE coverage {np.mean(hits):.3f}, median ATE df {np.median(dfs):.2f}")
    assert np.mean(hits) >= 0.92
    assert 1 <= np.median(dfs) < 4


def test_kenward_roger_never_reports_a_zero_se():
    """A non-positive adjusted variance (no information on the variance components) falls back to
    the unadjusted one, with a warning, instead of a zero-width interval."""
    from clusterhte.mixed.ddf import VarCompInference

    inf = VarCompInference(Phi=np.eye(2), P=np.zeros((1, 2, 2)), W_exp=np.eye(1), W_obs=None,
                           Phi_A=np.diag([2.0, -1.0]), psi=np.ones(1))
    with pytest.warns(RuntimeWarning, match="adjusted variance of 1 contrast"):
        se, _ = inf.kenward_roger(np.eye(2))
    np.testing.assert_allclose(se, [np.sqrt(2.0), 1.0])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::clusterhte.mixed.design.AliasedColumnsWarning")
@pytest.mark.parametrize("n_clusters", [7, 8])
def test_one_or_two_between_cluster_df_left_still_cover(n_clusters):
    """Just above the refused case: 7 or 8 clusters with the six cluster-level columns leave 1 or 2
    between-cluster df. Over 150 trials the LMM's and GAMM's ATE intervals still cover (measured:
    0.95-0.97, median df 1.2 and 2.1)."""
    from clusterhte.simulate.battery import Scenario

    sc = Scenario("s", "linear", n_clusters=n_clusters, size_lo=5, size_hi=30)
    trials = []
    for r in range(150):
        try:
            trials.append(simulate(sc, np.random.default_rng(900 + r)))
        except ValueError:
            continue
    for method in ("lmm", "gamm"):
        out = run(method, trials)
        print(f"\n{n_clusters} clusters, {method}, {len(trials)} trials: ATE coverage {out[:, 0].mean():.3f}, "
              f"pointwise {out[:, 1].mean():.3f}, median ATE df {np.median(out[:, 2]):.1f}")
        assert out[:, 0].mean() >= 0.92 and out[:, 1].mean() >= 0.88
        assert np.median(out[:, 2]) < n_clusters - 5
