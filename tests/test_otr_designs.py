"""The multisite-OTR data-generating process reproduces the spec's structure and magnitudes."""

import numpy as np
import pandas as pd
import pytest

from clusterhte import seeds
from clusterhte.simulate import otr_designs as od


def _icc_oneway(values, cluster, n):
    g = pd.Series(values).groupby(cluster)
    msb = n * g.mean().var(ddof=1)
    msw = g.var(ddof=1).mean()
    return (msb - msw) / (msb + (n - 1) * msw)


def test_structure_and_both_arms():
    df = od.simulate_replicate("d2", 12, 8, np.random.default_rng(3))
    tr, te = df[df.split == "train"], df[df.split == "test"]
    assert len(tr) == len(te) == 96
    share = tr.groupby("cluster").treatment.mean()
    assert ((share > 0) & (share < 1)).all()
    # cluster terms shared between train and test
    assert np.allclose(tr.groupby("cluster").U1.first(), te.groupby("cluster").U1.first())
    # potential outcomes and the observed outcome agree
    assert np.allclose(df.outcome, np.where(df.treatment == 1, df.y1, df.y0))
    assert np.allclose(df.y1 - df.y0, df.delta)
    # delta formula with beta1 = 0.2 in Design 2
    exp = 0.2 + 0.5 * df.X3 - 0.2 * df.X4 - 0.2 * df.X5 + 0.2 * df.U1
    assert np.allclose(df.delta, exp)
    td = od.trial_from_replicate(df, "train")
    assert td.moderators == ("X3", "X4", "X5") and td.design == "multisite"


def test_spec_magnitudes():
    """P(delta > 0) ~ 0.63 in Design 1; treatment ICC larger in Design 4 than in Design 1."""
    p, icc = {}, {}
    for d in ("d1", "d4"):
        ps, ic = [], []
        for r in range(30):
            df = od.simulate_replicate(d, 25, 150, seeds.rng(5, d, r))
            tr = df[df.split == "train"]
            ps.append((tr.delta > 0).mean())
            ic.append(_icc_oneway(tr.treatment.to_numpy(), tr.cluster.to_numpy(), 150))
        p[d], icc[d] = np.mean(ps), np.mean(ic)
    assert abs(p["d1"] - 0.63) < 0.015
    assert icc["d4"] > icc["d1"] + 0.05
    assert 0.07 < icc["d1"] < 0.16 and 0.16 < icc["d4"] < 0.30


def test_nonlinear_term_only_in_design3():
    df1 = od.simulate_replicate("d1", 5, 10, np.random.default_rng(1))
    df3 = od.simulate_replicate("d3", 5, 10, np.random.default_rng(1))
    extra = np.exp(-0.6 * df3.X1 * df3.X2 + 0.3 * df3.X1)
    assert np.allclose(df3.y0 - extra, df1.y0)


def test_chunks_are_seeded_per_replicate():
    a = od.simulate_chunk("d1", 6, 5, range(0, 3), root_seed=9)
    b = od.simulate_chunk("d1", 6, 5, [2], root_seed=9)
    pd.testing.assert_frame_equal(a[a.rep == 2].reset_index(drop=True), b)
    c = od.simulate_chunk("d1", 6, 5, [2], root_seed=10)
    assert not np.allclose(b.outcome, c.outcome)


def test_cell_names_round_trip_and_errors():
    assert od.parse_cell(od.cell_name("d3", 150, 25)) == ("d3", 150, 25)
    with pytest.raises(ValueError, match="d9_J1_n2"):
        od.parse_cell("d9_J1_n2")
    with pytest.raises(ValueError, match="unknown OTR design"):
        od.simulate_replicate("d7", 5, 5, np.random.default_rng(0))
