"""CRT-CATE metrics against hand-computed numbers (spec crt_cate.md §4.4)."""

import numpy as np
import pandas as pd
import pytest

from clusterhte.evaluate import crt_metrics as cm
from clusterhte.simulate import crt_designs as cd


def _toy():
    """Truth and fits of three replicates: 0 ordinary, 1 failed, 2 without intervals.

    Training rows: 2 clusters x 2 individuals, tau = 1, 2, 3, 4; test rows: tau = 0, 1.
    """
    truth = []
    for rep in (0, 1, 2):
        truth.append(pd.DataFrame({"rep": rep, "split": "train", "row": range(4), "cluster": [0, 0, 1, 1],
                                   "tau": [1.0, 2.0, 3.0, 4.0]}))
        truth.append(pd.DataFrame({"rep": rep, "split": "test", "row": range(2), "cluster": [2, 2],
                                   "tau": [0.0, 1.0]}))
    truth = pd.concat(truth, ignore_index=True)
    nan = np.nan
    fits = pd.DataFrame({
        "rep":   [0] * 6 + [1] * 6 + [2] * 6,
        "split": (["train"] * 4 + ["test"] * 2) * 3,
        "row":   [0, 1, 2, 3, 0, 1] * 3,
        "cate":  [1.5, 2.0, 2.0, 5.0, 0.3, 0.6] + [nan] * 6 + [2.0, 3.0, 4.0, 5.0, 1.0, 2.0],
        "lower": [0.9, 1.4, 1.4, 4.4, 0.1, 0.4] + [nan] * 12,
        "upper": [2.1, 2.6, 2.6, 5.6, 0.5, 0.8] + [nan] * 12,
        "seconds": [3.0] * 6 + [7.0] * 6 + [1.0] * 6,
        "failed": [0] * 6 + [1] * 6 + [0] * 6,
        "ate": [2.625] * 4 + [0.45] * 2 + [nan] * 6 + [3.5] * 4 + [1.5] * 2,
        "ate_lower": [2.4] * 4 + [0.3] * 2 + [nan] * 12,
        "ate_upper": [2.8] * 4 + [0.6] * 2 + [nan] * 12,
    })
    return fits, truth


def _wide(m):
    return m.pivot(index="rep", columns="metric", values="value")


def test_hand_computed_metrics():
    fits, truth = _toy()
    m = cm.replicate_metrics(fits, truth, method="toy")
    assert list(m.columns) == ["rep", "method", "metric", "value"]
    assert set(m.metric) == set(cm.METRICS) and (m.method == "toy").all()
    w = _wide(m)
    r0 = w.loc[0]
    # errors 0.5, 0, -1, 1 -> squared mean 0.5625
    assert r0.pehe_in == pytest.approx(0.75)
    assert r0.pehe_out == pytest.approx(np.sqrt((0.09 + 0.16) / 2))
    assert r0.bias == pytest.approx(0.125) and r0.abs_bias == pytest.approx(0.125)
    # cluster means: tau 1.5, 3.5; cate 1.75, 3.5
    assert r0.cluster_pehe == pytest.approx(np.sqrt(0.25 ** 2 / 2))
    assert r0.ate_error == pytest.approx(0.125)
    assert r0.ate_covered == 1.0
    assert r0.coverage == pytest.approx(0.5)          # |err| <= 0.6 on rows 0, 1
    assert r0.width == pytest.approx(1.2)
    assert r0.coverage_out == 0.0 and r0.width_out == pytest.approx(0.4)
    assert r0.seconds == 3.0 and r0.failed == 0.0
    # failed replicate: only failed and seconds
    r1 = w.loc[1]
    assert r1.failed == 1.0 and r1.seconds == 7.0
    assert r1.drop(["failed", "seconds"]).isna().all()
    # no intervals: interval metrics NaN, the rest computed (cate = tau + 1 everywhere)
    r2 = w.loc[2]
    for k in ("pehe_in", "pehe_out", "bias", "abs_bias", "cluster_pehe", "ate_error"):
        assert r2[k] == pytest.approx(1.0), k
    for k in ("coverage", "width", "coverage_out", "width_out", "ate_covered"):
        assert np.isnan(r2[k]), k


def test_row_order_method_column_and_negative_bias():
    fits, truth = _toy()
    fits = fits.assign(cate=fits.cate - 2.0 * (fits.rep == 2), method="abc")  # rep 2: cate = tau - 1
    fits["ate"] = fits["ate"] - 2.0 * (fits.rep == 2)
    shuffled = fits.sample(frac=1.0, random_state=1)
    a = _wide(cm.replicate_metrics(fits, truth))
    b = _wide(cm.replicate_metrics(shuffled, truth.sample(frac=1.0, random_state=2)))
    pd.testing.assert_frame_equal(a, b)
    assert a.loc[2, "bias"] == pytest.approx(-1.0) and a.loc[2, "abs_bias"] == pytest.approx(1.0)
    assert a.loc[2, "ate_error"] == pytest.approx(-1.0)
    assert a.loc[2, "pehe_in"] == pytest.approx(1.0)


def test_partial_intervals_give_nan_coverage():
    fits, truth = _toy()
    fits.loc[(fits.rep == 0) & (fits.row == 3) & (fits.split == "train"), "upper"] = np.nan
    w = _wide(cm.replicate_metrics(fits, truth, method="x"))
    assert np.isnan(w.loc[0, "coverage"]) and np.isnan(w.loc[0, "width"])
    assert w.loc[0, "coverage_out"] == 0.0


def test_against_numpy_on_simulated_data():
    """PEHE and coverage of a noisy 'method' on a simulated chunk equal a direct computation."""
    sim = cd.simulate_chunk(cd.CrtCell(M=10, size="u10-30", icc=0.2, f0="lin", tau="nonlin"), 9, [0, 1],
                            n_test_clusters=5)
    rng = np.random.default_rng(0)
    f = sim[["rep", "split", "row"]].copy()
    f["cate"] = sim["tau"] + rng.normal(0, 0.3, len(sim))
    f["lower"], f["upper"] = f.cate - 0.5, f.cate + 0.5
    f["seconds"], f["failed"] = 0.1, 0
    f["ate"] = f.groupby(["rep", "split"]).cate.transform("mean")
    f["ate_lower"], f["ate_upper"] = f.ate - 0.1, f.ate + 0.1
    w = _wide(cm.replicate_metrics(f, sim, method="noisy"))
    for rep in (0, 1):
        s, g = sim[(sim.rep == rep) & (sim.split == "train")], f[(f.rep == rep) & (f.split == "train")]
        err = g.cate.to_numpy() - s.tau.to_numpy()
        assert w.loc[rep, "pehe_in"] == pytest.approx(np.sqrt(np.mean(err ** 2)))
        assert w.loc[rep, "coverage"] == pytest.approx(np.mean(np.abs(err) <= 0.5))
        cl = pd.DataFrame({"c": s.cluster.to_numpy(), "e": err}).groupby("c").e.mean()
        assert w.loc[rep, "cluster_pehe"] == pytest.approx(np.sqrt(np.mean(cl ** 2)))
        assert w.loc[rep, "ate_covered"] == float(abs(err.mean()) <= 0.1)
        s, g = sim[(sim.rep == rep) & (sim.split == "test")], f[(f.rep == rep) & (f.split == "test")]
        assert w.loc[rep, "pehe_out"] == pytest.approx(np.sqrt(np.mean((g.cate.to_numpy() - s.tau.to_numpy()) ** 2)))


def test_mismatched_tables_are_refused():
    fits, truth = _toy()
    with pytest.raises(ValueError, match="without simulation truth"):
        cm.replicate_metrics(fits, truth[truth.rep != 2], method="x")
    with pytest.raises(ValueError, match="ate_upper"):
        cm.replicate_metrics(fits.drop(columns="ate_upper"), truth, method="x")
    with pytest.raises(ValueError, match="method="):
        cm.replicate_metrics(fits, truth)


def test_aggregate_hand_computed():
    fits, truth = _toy()
    m = cm.replicate_metrics(fits, truth, method="toy")
    per_rep = pd.concat([m.assign(cell="A"), m.assign(cell="B", value=m.value * 2)], ignore_index=True)
    s = cm.aggregate(per_rep)
    assert list(s.columns) == ["cell", "method", "metric", "mean", "sd", "mcse", "n_reps", "n_failed"]
    assert len(s) == 2 * len(cm.METRICS)
    row = s[(s.cell == "A") & (s.metric == "pehe_in")].iloc[0]
    assert row["mean"] == pytest.approx(0.875)         # replicates 0 and 2; 1 failed
    assert row["sd"] == pytest.approx(np.std([0.75, 1.0], ddof=1))
    assert row["mcse"] == pytest.approx(row["sd"] / np.sqrt(2))
    assert row["n_reps"] == 2 and row["n_failed"] == 1
    cov = s[(s.cell == "A") & (s.metric == "coverage")].iloc[0]
    assert cov["mean"] == 0.5 and cov["n_reps"] == 1 and np.isnan(cov["sd"])
    fail = s[(s.cell == "A") & (s.metric == "failed")].iloc[0]
    assert fail["mean"] == pytest.approx(1 / 3) and fail["n_reps"] == 3
    assert s[(s.cell == "B") & (s.metric == "seconds")]["mean"].iloc[0] == pytest.approx(2 * 11 / 3)
    # design-factor columns added by the collect stage become group keys
    s2 = cm.aggregate(per_rep.assign(M=30, icc=0.05))
    assert list(s2.columns[:4]) == ["cell", "M", "icc", "method"]
    assert len(s2) == len(s)
