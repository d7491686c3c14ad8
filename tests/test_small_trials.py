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

    The LMM's CATE is linear in the covariates; on ``nonlinear`` its interval is centred on the best
    linear approximation, so its pointwise coverage of the nonlinear truth is below 0.85 whatever the
    df (0.81 with Kenward-Roger): a bias of the pre-specified model, not of the inference. That case
    is xfailed with the number printed."""
    out = run(method, battery_trials(scenario, 20))
    cov = out[:, 1].mean()
    print(f"\n{method} {scenario}, 20 trials: pointwise coverage {cov:.3f}, ATE coverage {out[:, 0].mean():.3f}")
    if method == "lmm" and scenario == "nonlinear" and cov < 0.85:
        pytest.xfail(f"linear LMM on a nonlinear CATE: pointwise coverage {cov:.3f} (model bias)")
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
