"""The OTR fit jobs' compact Arrow fit tables (stages.fitting.fit_replicates_arrow) hold exactly the
rows and values of the DataFrame fit table (fit_replicates), failed replicates included: expanded
(expand_fit_table / otr.read_fit_table) they are that table, column for column and type for type;
the replicate tables sliced from one chunk frame give bit-identical fits; the Parquet settings of
the simulated chunks and fit tables change no value or type."""

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
def test_compact_fit_table_expands_to_the_dataframe_table(sim, method, tmp_path):
    df, tb = _both(sim, method)
    # compact: only the row-varying values per row, the constants once per replicate
    assert tb.column_names == ["rep", "row", "cate", "decision"]
    assert [str(t) for t in tb.schema.types] == ["int32", "int32", "double", "int8"]
    per_rep = fitting.replicate_constants(tb.schema.metadata)
    assert per_rep["rep"].tolist() == [0, 1, 2] and per_rep["n"].tolist() == [6 * 12] * 3
    got = fitting.expand_fit_table(tb)
    assert list(got.columns) == fitting.FIT_COLUMNS
    pd.testing.assert_frame_equal(got.drop(columns="seconds"), df.drop(columns="seconds"), check_exact=True)
    assert len(got) == 3 * 6 * 12
    # per-replicate constant: one timing per replicate, exactly as recorded
    assert got.groupby("rep")["seconds"].nunique().eq(1).all()
    assert np.array_equal(got.groupby("rep")["seconds"].first().to_numpy(), per_rep["seconds"].to_numpy())
    # written as the fit jobs write it and read back: the full table, with the DataFrame's types
    io.write_parquet(df, tmp_path / "a.parquet")
    io.write_table(tb, tmp_path / "b.parquet", prov={"rule": "x"}, parquet=otr.FIT_PARQUET)
    assert io.read_provenance(tmp_path / "b.parquet") == {"rule": "x"}
    back = otr.read_fit_table(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(back, got, check_exact=True)
    pd.testing.assert_series_equal(back.dtypes, io.read_parquet(tmp_path / "a.parquet").dtypes)
    fit_cols = otr.read_fit(tmp_path / "b.parquet")
    assert list(fit_cols.columns) == otr.FIT_EVAL_COLUMNS
    assert np.array_equal(fit_cols["seconds"].to_numpy(), got["seconds"].to_numpy())
    pd.testing.assert_frame_equal(fit_cols.drop(columns="seconds"),
                                  df[otr.FIT_EVAL_COLUMNS].drop(columns="seconds"), check_exact=True,
                                  check_dtype=False)
    # a full (13-column) fit table is read the same way
    full = otr.read_fit(tmp_path / "a.parquet")
    pd.testing.assert_frame_equal(full.drop(columns="seconds"), fit_cols.drop(columns="seconds"),
                                  check_exact=True, check_dtype=False)
    pd.testing.assert_frame_equal(otr.read_fit_table(tmp_path / "a.parquet"), df, check_exact=True)


def test_failed_replicate_rows(sim, monkeypatch, tmp_path):
    df, tb = _both(sim, "q-fe", monkeypatch, fail_call={2})
    io.write_table(tb, tmp_path / "f.parquet", parquet=otr.FIT_PARQUET)
    got = otr.read_fit_table(tmp_path / "f.parquet")
    pd.testing.assert_frame_equal(got.drop(columns="seconds"), df.drop(columns="seconds"), check_exact=True)
    bad = got[got["rep"] == 1]
    assert (bad["failed"] == 1).all() and (bad["decision"] == -1).all() and bad["cate"].isna().all()
    assert bad["error"].eq("RuntimeError: singular design in this replicate").all()
    assert bad["ate"].isna().all()
    ok = got[got["rep"] != 1]
    assert (ok["failed"] == 0).all() and ok["error"].eq("").all() and ok["cate"].notna().all()
    ev = otr.read_fit(tmp_path / "f.parquet")
    assert ev.loc[ev["rep"] == 1, "failed"].eq(1).all() and ev.loc[ev["rep"] != 1, "failed"].eq(0).all()


def test_compact_table_keeps_intervals_and_checks_its_rows():
    """lower/upper are stored when a method has intervals; a table whose rows do not match its
    replicate metadata is refused."""
    import pyarrow as pa

    from clusterhte.methods.base import CateResult

    class Interval:
        def fit(self, train):
            return self

        def predict(self, test):
            x = test.X(["X3"])[:, 0]
            return CateResult(point=x, lower=x - 1.0, upper=x + 1.0, info={"ate_interval": (-0.2, 0.4)})

    reps = list(otr.iter_replicates(otr.simulate(CELL, 0, 2, 2, seed=4)))
    real = fitting.methods.make
    fitting.methods.make = lambda name, params=None, random_state=None: Interval()
    try:
        tb = fitting.fit_replicates_arrow(reps, study="otr", cell=CELL, method="q-fe", params={},
                                          root_seed=1, log=_io.StringIO())
        df = fitting.fit_replicates(reps, study="otr", cell=CELL, method="q-fe", params={},
                                    root_seed=1, log=_io.StringIO())
    finally:
        fitting.methods.make = real
    assert tb.column_names == ["rep", "row", "cate", "decision", "lower", "upper"]
    got = fitting.expand_fit_table(tb)
    pd.testing.assert_frame_equal(got.drop(columns="seconds"), df.drop(columns="seconds"), check_exact=True)
    assert np.array_equal(got["lower"], got["cate"] - 1.0) and np.array_equal(got["upper"], got["cate"] + 1.0)
    with pytest.raises(ValueError, match="rows"):
        fitting.expand_fit_table(tb.slice(0, 5).replace_schema_metadata(tb.schema.metadata))


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


@pytest.mark.parametrize("stored", ["default", "SIM_PARQUET"])
def test_read_sim_columns_match_the_written_chunk(sim, tmp_path, stored):
    """The fit jobs' reader (split read as a dictionary column) gives the chunk's values, whether
    the chunk was written with pyarrow's defaults or as the simulate jobs write it."""
    io.write_parquet(sim, tmp_path / "sim.parquet", parquet=otr.SIM_PARQUET if stored != "default" else None)
    pd.testing.assert_frame_equal(io.read_parquet(tmp_path / "sim.parquet"), sim, check_exact=True)
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


@pytest.mark.parametrize("labels", ["integers", "strings", "sparse integers"])
def test_check_chunk_finds_one_arm_clusters_and_missing_values(sim, labels):
    a = {k: v.copy() for k, v in otr._as_arrays(sim).items()}
    if labels == "strings":
        a["cluster"] = np.char.add("site", a["cluster"].astype(str)).astype(object)
    elif labels == "sparse integers":
        a["cluster"] = a["cluster"] * 10**12
    otr.check_chunk(a)  # the simulator's chunk is valid
    one = a.copy()
    rows = (one["rep"] == 1) & ~one["is_test"] & (one["cluster"] == one["cluster"][0])
    one["treatment"] = np.where(rows, 1.0, one["treatment"])
    with pytest.raises(otr.TrialDataError, match=r"1 training cluster\(s\) have only one arm"):
        otr.check_chunk(one)
    # a test row with one arm in its cluster is fine (prediction rows need no arms)
    t = a.copy()
    t["treatment"] = np.where(t["is_test"], 1.0, t["treatment"])
    otr.check_chunk(t)
    nan = a.copy()
    nan["X4"] = nan["X4"].copy()
    nan["X4"][5] = np.nan
    with pytest.raises(otr.TrialDataError, match=r"column 'X4' has missing or infinite values at rows \[5\]"):
        otr.check_chunk(nan)


def test_simulated_table_is_the_simulated_frame(tmp_path):
    """The simulate jobs' Arrow table (no pandas frame) holds the chunk's columns, values and
    types: written and read back it is the DataFrame of otr.simulate."""
    df = otr.simulate(CELL, 1, 5, 2, seed=9)
    tb = otr.simulate_table(CELL, 1, 5, 2, seed=9)
    assert tb.column_names == list(df.columns)
    io.write_table(tb, tmp_path / "a.parquet", parquet=otr.SIM_PARQUET)
    io.write_parquet(df, tmp_path / "b.parquet", parquet=otr.SIM_PARQUET)
    a, b = io.read_parquet(tmp_path / "a.parquet"), io.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a, df, check_exact=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    sa, sb = pq.read_schema(tmp_path / "a.parquet"), pq.read_schema(tmp_path / "b.parquet")
    assert [(f.name, f.type) for f in sa] == [(f.name, f.type) for f in sb]
    assert set(a["rep"]) == {2, 3} and set(a["split"]) == {"train", "test"}


def test_keep_freed_memory_reuses_large_blocks():
    """After keep_freed_memory() (glibc), a replicate-like pattern -- a dozen arrays of 0.3-3.6 MB
    allocated, then freed in another order, twenty times -- reuses the freed memory: no page
    faults (glibc's defaults give ~100,000 here, fresh zeroed pages every round)."""
    import resource
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc allocator tuning is Linux-only")
    if not fitting.keep_freed_memory():
        pytest.skip("not glibc")
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.integers(40_000, 450_000, 12)]

    def work():
        arrs = [np.ones(s) for s in sizes]
        for i in rng.permutation(len(arrs)):
            arrs[i] = None

    work()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        work()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 2000, faults
