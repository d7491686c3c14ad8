"""The CRT scenario battery: every estimator against the bounds a trial statistician needs.

CI version: each method on the scenarios that break estimators (null effect, cluster-level
modifier, 10 clusters of sizes 3-80) at the quick settings, 2 replicates. The slow version
(``make test-slow``) runs all eight scenarios over 20 replicates and checks pointwise coverage on
the linear and nonlinear scenarios; it prints the method x scenario table.

Bounds (issue "CRT-CATE estimators you can trust"): no failure anywhere; null effect: CATE SD
< 0.25 and 95% intervals containing 0 for >= 90% of rows; cluster-covariate modifier: correlation
with the truth >= 0.6 and mean CATE within 0.25 of the true ATE; pointwise coverage in
[0.85, 0.995] on the linear and nonlinear scenarios (slow).
"""

from __future__ import annotations

import pandas as pd
import pytest

from clusterhte import methods
from clusterhte.evaluate import battery

QUICK = battery.settings("quick")


def _check_bounds(per_rep: pd.DataFrame) -> list[str]:
    """Messages of every bound a method breaks."""
    bad = []
    failed = per_rep[per_rep["failed"] > 0]
    for _, r in failed.iterrows():
        bad.append(f"{r['method']} failed on {r['scenario']} rep {r['rep']}: {r['error']}")
    s = battery.summarise(per_rep[per_rep["failed"] == 0]).set_index(["method", "scenario"])
    for (m, sc), r in s.iterrows():
        if sc == "null":
            if not r["cate_sd"] < 0.25:
                bad.append(f"{m} null: CATE SD {r['cate_sd']:.3f} >= 0.25")
            if not r["zero_in_interval"] >= 0.90:
                bad.append(f"{m} null: intervals contain 0 for {r['zero_in_interval']:.3f} < 0.90 of rows")
        if sc == "cluster":
            if not r["corr"] >= 0.6:
                bad.append(f"{m} cluster: correlation with truth {r['corr']:.3f} < 0.6")
            if not abs(r["ate_error"]) <= 0.25:
                bad.append(f"{m} cluster: mean CATE off the ATE by {r['ate_error']:.3f}")
        if sc in ("linear", "nonlinear"):
            if not 0.85 <= r["coverage"] <= 0.995:
                bad.append(f"{m} {sc}: pointwise coverage {r['coverage']:.3f} outside [0.85, 0.995]")
    return bad


@pytest.mark.parametrize("method", methods.CRT_METHODS)
def test_battery_quick(method):
    per_rep = battery.run([method], ["null", "cluster", "small"], reps=2, params=QUICK, log=None)
    assert len(per_rep) == 6
    _assert_bounds(per_rep)


def _assert_bounds(per_rep: pd.DataFrame) -> None:
    bad = _check_bounds(per_rep)
    assert not bad, "\n".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize("method", methods.CRT_METHODS)
def test_battery_full(method):
    """One method on all eight scenarios over 20 replicates, with every bound; prints its table
    (``pytest -m slow tests/test_battery.py -s -k merf`` for one method). The trials and the
    method's seeds do not depend on which methods run, so the per-method tables stack into the
    method x scenario table."""
    per_rep = battery.run([method], list(battery.SCENARIOS), reps=20, params=QUICK, log=None)
    table = battery.summarise(per_rep)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print("\n" + table.round(3).to_string(index=False))
    _assert_bounds(per_rep)


def test_lmm_covers_its_linear_projection():
    """The paper's linear LMM (``spline_knots = 0``) has intervals valid for what a linear model
    estimates: on the nonlinear scenario its target is the projection of the true CATE on the
    model's effect terms [1, X, V] (here the least-squares projection over the trial's rows), and
    the t intervals cover it at the nominal rate, while the coverage of the nonlinear truth itself
    is lower by the model's bias (0.81 over 20 replicates; the default LMM's function selection
    brings it to 0.91). Measured: 0.954 over 20 replicates."""
    import numpy as np

    from clusterhte import seeds
    from clusterhte.simulate.battery import simulate

    cover_blp, cover_tau = [], []
    for r in range(20):
        trial, tau = simulate("nonlinear", seeds.rng(20231, "battery", "nonlinear", r))
        res = methods.make("lmm", {**QUICK["lmm"], "spline_knots": 0}, random_state=r).fit(trial).predict(trial)
        D = np.column_stack([np.ones(trial.n), trial.frame[list(trial.covariates)].to_numpy(float)])
        blp = D @ np.linalg.lstsq(D, tau, rcond=None)[0]
        cover_blp.append(np.mean((res.lower <= blp) & (blp <= res.upper)))
        cover_tau.append(np.mean((res.lower <= tau) & (tau <= res.upper)))
    print(f"LMM nonlinear: coverage of the linear projection {np.mean(cover_blp):.3f}, "
          f"of the true CATE {np.mean(cover_tau):.3f}")
    assert 0.92 <= np.mean(cover_blp) <= 0.98


def test_scenarios_match_their_definition():
    import numpy as np

    from clusterhte import seeds
    from clusterhte.simulate.battery import SCENARIOS, simulate

    for name, sc in SCENARIOS.items():
        trial, tau = simulate(name, seeds.rng(1, "battery-check", name))
        codes = trial.cluster_codes
        assert codes.max() + 1 == sc.n_clusters
        sizes = np.bincount(codes)
        assert sizes.min() >= sc.size_lo and sizes.max() <= sc.size_hi
        arm = np.bincount(codes, weights=trial.treatment) / sizes
        assert set(arm) == {0.0, 1.0} and arm.sum() == sc.n_clusters // 2
        assert tau.shape == (trial.n,)
    # large draws: outcome variance about 1 under the null, cluster modifier SD 0.8
    from dataclasses import replace

    big = replace(SCENARIOS["null"], n_clusters=2000)
    trial, tau = simulate(big, seeds.rng(2, "battery-check"))
    assert np.all(tau == 0)
    assert abs(np.var(trial.outcome) - 1.0) < 0.05
    trial, tau = simulate(replace(SCENARIOS["cluster"], n_clusters=4000), seeds.rng(3, "battery-check"))
    assert abs(tau.std() - 0.8) < 0.03
    # tau is constant within cluster
    mean_tau = np.bincount(trial.cluster_codes, weights=tau) / np.bincount(trial.cluster_codes)
    assert np.allclose(mean_tau[trial.cluster_codes], tau)


def test_set_overrides_one_hyperparameter_and_refuses_unknown_ones():
    params = battery.settings("quick")
    out = battery.with_override(params, "megb.effect_interval=shrunk", _raise)
    assert out["megb"]["effect_interval"] == "shrunk" and params["megb"].get("effect_interval") != "shrunk"
    assert battery.with_override(params, "cf.n_half_samples=4", _raise)["cf"]["n_half_samples"] == 4
    for bad, msg in [("megb.effect_interval", "METHOD.PARAM=VALUE"), ("xgb.depth=2", "unknown method"),
                     ("megb.depth=2", "no hyperparameter 'depth'")]:
        with pytest.raises(ValueError, match=msg):
            battery.with_override(params, bad, _raise)


def _raise(message):
    raise ValueError(message)


def test_other_designs_match_their_definition_and_unknown_names_are_refused():
    import numpy as np

    from clusterhte import seeds
    from clusterhte.simulate.battery import OTHER_DESIGNS, SCENARIOS, get_scenario, simulate

    assert not set(OTHER_DESIGNS) & set(SCENARIOS)
    for name, sc in OTHER_DESIGNS.items():
        trial, tau = simulate(name, seeds.rng(1, "battery-check", name))
        codes = trial.cluster_codes
        sizes = np.bincount(codes)
        assert sizes.size == sc.n_clusters and sizes.min() >= sc.size_lo and sizes.max() <= sc.size_hi
        arm = np.bincount(codes, weights=trial.treatment) / sizes
        assert set(arm) == {0.0, 1.0} and arm.sum() == sc.n_treated
    assert OTHER_DESIGNS["two_to_one"].n_treated == 24
    v2 = simulate("cluster_binary", seeds.rng(2, "x"))
    np.testing.assert_allclose(v2[1], 0.3 + 0.6 * v2[0].frame["V2"].to_numpy())
    with pytest.raises(ValueError, match="unknown battery scenario 'nul'.*null20"):
        get_scenario("nul")


def test_battery_cli_refuses_an_unknown_scenario(capsys):
    with pytest.raises(SystemExit):
        battery.main(["--methods", "lmm", "--scenarios", "null,tiny2", "--reps", "1"])
    assert "unknown battery scenario 'tiny2'" in capsys.readouterr().err


@pytest.mark.parametrize("method", methods.CRT_METHODS)
def test_every_method_fits_a_two_to_one_allocation(method):
    """24 of 36 clusters treated (the propensity is 2/3, the R-learner weights differ by arm): every
    estimator fits, and its CATEs follow the linear truth."""
    per_rep = battery.run([method], ["two_to_one"], reps=1, params=QUICK, log=None)
    r = per_rep.iloc[0]
    assert r["failed"] == 0, r["error"]
    assert r["corr"] > 0.5 and r["coverage"] > 0.6
