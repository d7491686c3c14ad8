"""The OTR fit jobs' Arrow fit tables (stages.fitting.fit_replicates_arrow) hold exactly the rows,
values and Parquet types of the DataFrame fit table (fit_replicates), failed replicates included,
and the replicate tables sliced from one chunk frame give bit-identical fits."""

import io as _io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from clusterhte import io, methods
from clusterhte.stages import fitting, otr

CELL = "d2_J6_n12"


@pytest.fixture(scope="module")
def sim():
    return otr.simulate(CELL, 0, 3, 3, seed=11)


def _both(sim, method, monkeypatch=None, fail_call=None):
    reps = list(otr.iter_replicates(sim))
    calls = {"n": 0}
    if fail_call is not None:
        real = methods.make

        class Broken:
            def fit(self, train):
                raise RuntimeError("singular design in this replicate")

        def make(name, params=None, random_state=None):
            calls["n"] += 1
            return Broken() if calls["n"] in fail_call else real(name, params, random_state=random_state)

        monkeypatch.setattr(fitting.methods, "make", make)
    kw = dict(study="otr", cell=CELL, method=method, params={}, root_seed=3, log=_io.StringIO())
    calls["n"] = 0
    df = fitting.fit_replicates(reps, **kw)
    calls["n"] = 0
    tb = fitting.fit_replicates_arrow(reps, **kw)
    return df, tb


@pytest.mark.parametrize("method", ["q-rs", "ws-augid"])
def test_arrow_fit_table_equals_the_dataframe_table(sim, method, tmp_path):
    df, tb = _both(sim, method)
    got = tb.to_pandas()
    assert list(got.columns) == fitting.FIT_COLUMNS
    pd.testing.assert_frame_equal(got.drop(columns="seconds"), df.drop(columns="seconds"), check_exact=True)
    assert len(got) == 3 * 6 * 12
    # per-replicate constant: one timing per replicate
    assert got.groupby("rep")["seconds"].nunique().eq(1).all()
    # same Parquet types as the DataFrame written through io.write_parquet
    io.write_parquet(df, tmp_path / "a.parquet")
    io.write_table(tb, tmp_path / "b.parquet", prov={"rule": "x"})
    sa, sb = pq.read_schema(tmp_path / "a.parquet"), pq.read_schema(tmp_path / "b.parquet")
    assert [(f.name, f.type) for f in sa] == [(f.name, f.type) for f in sb]
    assert io.read_provenance(tmp_path / "b.parquet") == {"rule": "x"}
    fit_cols = otr.read_fit(tmp_path / "b.parquet")
    assert list(fit_cols.columns) == otr.FIT_EVAL_COLUMNS
    assert np.array_equal(fit_cols["seconds"].to_numpy(), got["seconds"].to_numpy())
    pd.testing.assert_frame_equal(fit_cols.drop(columns="seconds"),
                                  df[otr.FIT_EVAL_COLUMNS].drop(columns="seconds"), check_exact=True)


def test_failed_replicate_rows(sim, monkeypatch):
    df, tb = _both(sim, "q-fe", monkeypatch, fail_call={2})
    got = tb.to_pandas()
    pd.testing.assert_frame_equal(got.drop(columns="seconds"), df.drop(columns="seconds"), check_exact=True)
    bad = got[got["rep"] == 1]
    assert (bad["failed"] == 1).all() and (bad["decision"] == -1).all() and bad["cate"].isna().all()
    assert bad["error"].eq("RuntimeError: singular design in this replicate").all()
    ok = got[got["rep"] != 1]
    assert (ok["failed"] == 0).all() and ok["error"].eq("").all() and ok["cate"].notna().all()


def test_chunk_frame_slices_give_the_per_replicate_frames(sim):
    """Each replicate's TrialData (a row slice of one chunk frame) has the values of a frame built
    from that replicate's rows, and a fit on it is bit-identical."""
    for rep, train, test in otr.iter_replicates(sim):
        rows = sim[(sim["rep"] == rep) & (sim["split"] == "train")].sort_values("row")
        cols = ["cluster", "treatment", "outcome", *otr.otr_designs.COVARIATES]
        own = pd.DataFrame({c: rows[c].to_numpy() for c in cols})
        pd.testing.assert_frame_equal(train.frame, own, check_exact=True)
        ref = otr.TrialData(own, "multisite", otr.otr_designs.COVARIATES, (), otr.otr_designs.MODERATORS)
        a = methods.make("q-ri", random_state=1).fit(train).predict(test["test"]).point
        b = methods.make("q-ri", random_state=1).fit(ref).predict(test["test"]).point
        assert np.array_equal(a, b)


def test_read_sim_columns_match_the_written_chunk(sim, tmp_path):
    """The fit jobs' reader (split read as a dictionary column) gives the chunk's values."""
    io.write_parquet(sim, tmp_path / "sim.parquet")
    a = otr.read_sim(tmp_path / "sim.parquet")
    assert np.array_equal(a["is_test"], (sim["split"] == "test").to_numpy())
    assert a["is_test"].dtype == bool and 0 < a["is_test"].sum() < len(sim)
    for c in otr.FIT_INPUT_COLUMNS:
        if c != "split":
            assert np.array_equal(a[c], sim[c].to_numpy()), c
    from_file = [(r, tr.frame, te["test"].frame) for r, tr, te in otr.iter_replicates(a)]
    from_frame = [(r, tr.frame, te["test"].frame) for r, tr, te in otr.iter_replicates(sim)]
    assert [r for r, _, _ in from_file] == [r for r, _, _ in from_frame] == [0, 1, 2]
    for (_, a_tr, a_te), (_, b_tr, b_te) in zip(from_file, from_frame):
        pd.testing.assert_frame_equal(a_tr, b_tr, check_exact=True)
        pd.testing.assert_frame_equal(a_te, b_te, check_exact=True)
