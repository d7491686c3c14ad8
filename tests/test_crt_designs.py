"""The CRT-CATE design cells and data-generating process follow spec crt_cate.md §4."""

import numpy as np
import pandas as pd
import pytest

from clusterhte.data.trial import TrialDataError
from clusterhte.simulate import crt_designs as cd

CELL = cd.CrtCell(M=30, size="u10-30", icc=0.05, f0="lin", tau="lin")


def _icc_anova(values, cluster):
    """One-way ANOVA ICC estimator for equal cluster sizes."""
    g = pd.Series(np.asarray(values)).groupby(np.asarray(cluster))
    n = g.size().iloc[0]
    msb = n * g.mean().var(ddof=1)
    msw = g.var(ddof=1).mean()
    return (msb - msw) / (msb + (n - 1) * msw)


@pytest.fixture(scope="module")
def big():
    """2000 fixed-size clusters of 20, ICC 0.2 (no test set): for moment checks."""
    out = {}
    for tau in ("lin", "nonlin"):
        cell = cd.CrtCell(M=2000, size=20, icc=0.2, f0="nonlin", tau=tau)
        out[tau] = cd.simulate_replicate(cell, np.random.default_rng(7), n_test_clusters=0)
    return out


# ------------------------------------------------------------------------------ cells and grid
def test_cell_name_round_trip_and_normalisation():
    assert CELL.name == "M30_su10-30_icc0.05_f0lin_taulin"
    assert cd.CrtCell.from_name(CELL.name) == CELL
    fixed = cd.CrtCell(M=60, size="20", icc=0.2, f0="nonlin", tau="hom")
    assert fixed.size == 20 and fixed.name == "M60_s20_icc0.2_f0nonlin_tauhom"
    assert cd.CrtCell.from_name(fixed.name) == fixed
    for c in cd.grid():
        assert cd.CrtCell.from_name(c.name) == c
        assert all(ch.isalnum() or ch in "_.-" for ch in c.name)


@pytest.mark.parametrize("bad", ["M30_su10-30_icc0.05_f0lin", "M30_su10-30_icc0.05_f0cubic_taulin",
                                 "M30_sx_icc0.05_f0lin_taulin", "M30_su10-30_icc1.5_f0lin_taulin",
                                 "d1_J25_n25", ""])
def test_bad_cell_names(bad):
    with pytest.raises(ValueError, match="bad CRT cell name"):
        cd.CrtCell.from_name(bad)


def test_bad_cell_values():
    with pytest.raises(ValueError, match="tau"):
        cd.CrtCell(M=30, tau="quadratic")
    with pytest.raises(ValueError, match="cluster size"):
        cd.CrtCell(M=30, size="u30-10")
    with pytest.raises(ValueError, match="icc"):
        cd.CrtCell(M=30, icc=1.0)


def test_grid_is_the_36_cell_design():
    g = cd.grid()
    assert len(g) == 36 == len({c.name for c in g})
    main = [c for c in g if c.size == "u10-30"]
    sens = [c for c in g if c.size == 20]
    assert len(main) == 24 and len(sens) == 12
    assert {c.f0 for c in sens} == {"lin"}
    assert {(c.M, c.icc) for c in g} == {(30, 0.05), (30, 0.2), (60, 0.05), (60, 0.2)}
    # sub-grids from lists
    assert len(cd.grid(M=[30], icc=[0.05], tau=["lin"], sensitivity=False)) == 2
    assert len(cd.grid(M=[30], icc=[0.05], tau=["lin"])) == 3
    assert len(cd.grid(size=["u10-30", 20])) == 48
    assert [c.name for c in cd.grid(M=30, size=20, icc=0.05, f0="lin", tau="hom")] == ["M30_s20_icc0.05_f0lin_tauhom"]


# ------------------------------------------------------------------------------ one replicate
def test_structure_allocation_and_truth():
    df = cd.simulate_replicate(CELL, np.random.default_rng(1))
    assert list(df.columns) == list(cd.COLUMNS)
    tr, te = df[df.split == "train"], df[df.split == "test"]
    sizes = tr.groupby("cluster").size()
    assert len(sizes) == 30 and sizes.between(10, 30).all()
    assert len(te) == 50 * 20 and (te.groupby("cluster").size() == 20).all()
    assert set(tr.cluster).isdisjoint(te.cluster)
    for g in (tr, te):
        assert np.array_equal(g["row"], np.arange(len(g)))
        arm = g.groupby("cluster").treatment.agg(["min", "max"])
        assert (arm["min"] == arm["max"]).all()                 # assigned by cluster
        assert set(g.treatment.unique()) == {0, 1}
    assert tr.groupby("cluster").treatment.first().sum() == 15  # exact 1:1
    assert te.groupby("cluster").treatment.first().sum() == 25
    for c in ("V1", "V2", "V3", "b"):
        assert (df.groupby("cluster")[c].nunique() == 1).all()
    assert np.allclose(df.y1 - df.y0, df.tau)
    assert np.allclose(df.outcome, np.where(df.treatment == 1, df.y1, df.y0))
    assert np.allclose(df.tau, 0.5 + 0.5 * df.X1 + 0.5 * df.V2 - 0.25 * df.X3)
    assert np.allclose(df.f0, 1 + 0.5 * df.X1 - 0.5 * df.X2 + 0.5 * df.X3 + 0.5 * df.V1 + 0.5 * df.V2)
    assert set(df.X3.unique()) == {0.0, 1.0} and df.X4.between(-1, 1).all()
    # V3 uses the theoretical moments of Uniform{10..30}; test clusters of 20 sit at the mean
    mu, sd = cd.size_moments("u10-30")
    assert mu == 20 and sd == pytest.approx(np.sqrt((21 ** 2 - 1) / 12))
    assert np.allclose(tr.V3, (tr.groupby("cluster").cluster.transform("size") - mu) / sd)
    assert np.allclose(te.V3, 0.0)


def test_odd_number_of_clusters_is_refused():
    with pytest.raises(ValueError, match="odd"):
        cd.simulate_replicate(cd.CrtCell(M=31), np.random.default_rng(0))


def test_variance_components_and_x1_icc(big):
    df = big["lin"]
    resid = df.outcome - df.f0 - df.treatment * df.tau
    assert _icc_anova(resid, df.cluster) == pytest.approx(0.2, abs=0.03)
    assert resid.var() == pytest.approx(1.0, abs=0.05)
    assert np.allclose(resid, df.b + (df.y0 - df.f0 - df.b))
    assert _icc_anova(df.X1, df.cluster) == pytest.approx(0.2, abs=0.03)
    assert df.groupby("cluster").treatment.first().mean() == 0.5


def test_tau_and_f0_formulas_at_hand_picked_points():
    pts = {"X1": np.array([0.0, 1.0, -2.0]), "X2": np.array([0.5, -1.0, 2.0]), "X3": np.array([1.0, 0.0, 1.0]),
           "X4": np.array([0.5, -0.5, 0.0]), "V1": np.array([2.0, 0.0, -1.0]), "V2": np.array([1.0, 0.0, 1.0])}
    assert np.allclose(cd.tau_value("hom", pts), [0.5, 0.5, 0.5])
    # 0.5 + 0.5 X1 + 0.5 V2 - 0.25 X3
    assert np.allclose(cd.tau_value("lin", pts), [0.75, 1.0, -0.25])
    # 0.5 + 0.5 1{X2>0} + 0.5 X3 V2 + 0.5 sin(pi X4) + 0.25 V1^2
    assert np.allclose(cd.tau_value("nonlin", pts), [0.5 + 0.5 + 0.5 + 0.5 + 1.0, 0.5 - 0.5, 0.5 + 0.5 + 0.5 + 0.25])
    # 1 + sin(pi X1 X4) + 0.5 X2^2 + 0.5 X3 X4 + 0.5 V1 + 0.5 V2 + 0.25 V1 X1
    assert np.allclose(cd.f0_value("nonlin", pts),
                       [1 + 0 + 0.125 + 0.25 + 1 + 0.5, 1 + np.sin(-np.pi / 2) + 0.5, 1 + 2 + 0 - 0.5 + 0.5 + 0.5])
    assert np.allclose(cd.f0_value("lin", pts), [1 - 0.25 + 0.5 + 1 + 0.5, 1 + 0.5 + 0.5, 1 - 1 - 1 + 0.5 - 0.5 + 0.5])


def test_mean_of_tau(big):
    assert cd.TAU_MEAN["lin"] == 0.5 + 0.5 * 0.5 - 0.25 * 0.5
    assert big["lin"].tau.mean() == pytest.approx(cd.TAU_MEAN["lin"], abs=0.03)
    assert big["nonlin"].tau.mean() == pytest.approx(cd.TAU_MEAN["nonlin"], abs=0.03)
    df = big["lin"]
    # V1 ~ N(0,1), V2 ~ Bernoulli(.5), X2 ~ N(0,1), X4 ~ U(-1,1) marginal moments
    v = df.groupby("cluster")[["V1", "V2"]].first()
    assert v.V1.mean() == pytest.approx(0, abs=0.1) and v.V1.var() == pytest.approx(1, abs=0.1)
    assert v.V2.mean() == pytest.approx(0.5, abs=0.05)
    assert df.X1.var() == pytest.approx(1.25, abs=0.05) and df.X4.var() == pytest.approx(1 / 3, abs=0.02)


# ------------------------------------------------------------------------------ chunks and seeds
def test_replicate_is_the_same_in_any_chunk():
    a = cd.simulate_chunk(CELL, 5, range(3), n_test_clusters=4)
    b = cd.simulate_chunk(CELL, 5, [2], n_test_clusters=4)
    assert list(a.columns[:2]) == ["rep", "split"]
    assert sorted(a.rep.unique()) == [0, 1, 2]
    pd.testing.assert_frame_equal(a[a.rep == 2].reset_index(drop=True), b)
    c = cd.simulate_chunk(CELL, 6, [2], n_test_clusters=4)
    assert not np.allclose(c.outcome.iloc[:50], b.outcome.iloc[:50])
    r0, r1 = a[a.rep == 0], a[a.rep == 1]
    assert not np.allclose(r0.X1.iloc[:50], r1.X1.iloc[:50])
    # a cell name works as well as a cell, and the study enters the seed
    pd.testing.assert_frame_equal(cd.simulate_chunk(CELL.name, 5, [2], n_test_clusters=4), b)
    assert not cd.simulate_chunk(CELL, 5, [2], study="other", n_test_clusters=4).equals(b)


def test_stage_simulate_uses_chunked_reps():
    from clusterhte.stages import crt
    df = crt.simulate(CELL.name, 1, replicates=5, reps_per_chunk=2, seed=3, n_test_clusters=2)
    assert sorted(df.rep.unique()) == [2, 3]


# ------------------------------------------------------------------------------ trial tables
def test_trial_from_replicate_roles_and_order():
    df = cd.simulate_chunk(CELL, 1, [4])
    tr = cd.trial_from_replicate(df, "train")
    assert tr.design == "crt"
    assert tr.individual_covariates == ("X1", "X2", "X3", "X4", "X5")
    assert tr.cluster_covariates == ("V1", "V2", "V3")
    assert np.allclose(tr.outcome, df.loc[df.split == "train", "outcome"])
    te = cd.trial_from_replicate(df, "test")
    assert te.n == 1000 and te.cluster_covariates == tr.cluster_covariates
    assert cd.trial_from_replicate(df, "train", include_v3=False).cluster_covariates == ("V1", "V2")
    # row order is restored from 'row' even when the table is shuffled
    shuffled = df.sample(frac=1.0, random_state=0)
    assert np.allclose(cd.trial_from_replicate(shuffled, "test").X(["X1"]).ravel(),
                       df.loc[df.split == "test", "X1"])


def test_fixed_size_cell_drops_constant_v3_and_test_needs_no_outcome():
    cell = cd.CrtCell(M=10, size=20, icc=0.2, f0="nonlin", tau="nonlin")
    df = cd.simulate_chunk(cell, 1, [0], n_test_clusters=3)
    assert np.allclose(df.V3, 0)
    tr = cd.trial_from_replicate(df, "train")
    assert tr.cluster_covariates == ("V1", "V2")
    with pytest.raises(TrialDataError, match="V3"):
        cd.trial_from_replicate(df, "train", include_v3=True)
    df.loc[df.split == "test", "outcome"] = np.nan
    te = cd.trial_from_replicate(df, "test")
    assert te.n == 60 and np.isnan(te.outcome).all()


def test_trial_from_replicate_refuses_bad_input():
    df = cd.simulate_chunk(CELL, 1, [0, 1], n_test_clusters=2)
    with pytest.raises(ValueError, match="one replicate"):
        cd.trial_from_replicate(df, "train")
    with pytest.raises(ValueError, match="split"):
        cd.trial_from_replicate(df[df.rep == 0], "valid")
    with pytest.raises(ValueError, match="X5"):
        cd.trial_from_replicate(df[df.rep == 0].drop(columns="X5"), "train")


def _icc_anova_unbalanced(values, cluster):
    """One-way ANOVA ICC estimator for unequal cluster sizes (n0 = adjusted mean size)."""
    v, c = np.asarray(values, float), np.asarray(cluster)
    g = pd.Series(v).groupby(c)
    n_i, m_i = g.size().to_numpy(), g.mean().to_numpy()
    N, k = n_i.sum(), n_i.size
    msb = np.sum(n_i * (m_i - v.mean()) ** 2) / (k - 1)
    msw = np.sum((v - g.transform("mean").to_numpy()) ** 2) / (N - k)
    n0 = (N - np.sum(n_i ** 2) / N) / (k - 1)
    return (msb - msw) / (msb + (n0 - 1) * msw)


@pytest.mark.slow
def test_every_cell_of_the_grid_at_scale():
    """All 36 cells, 100 replicates each: residual ICC, total variance, E[tau] and 1:1 allocation."""
    for cell in cd.grid():
        df = cd.simulate_chunk(cell, 20231, range(100), n_test_clusters=0)
        key = df.rep * 1000 + df.cluster
        resid = df.outcome - df.f0 - df.treatment * df.tau
        assert _icc_anova_unbalanced(resid, key) == pytest.approx(cell.icc, abs=0.02), cell.name
        assert resid.var() == pytest.approx(1.0, abs=0.03), cell.name
        assert df.tau.mean() == pytest.approx(cd.TAU_MEAN[cell.tau], abs=0.03), cell.name
        assert (df.groupby("rep").cluster.nunique() == cell.M).all()
        assert (df.groupby(["rep", "cluster"]).treatment.first().groupby("rep").sum() == cell.M // 2).all()
