"""TrialData validation: one clear error naming the column, cluster or rows."""

import numpy as np
import pandas as pd
import pytest

from clusterhte.data.trial import TrialDataError, make_trial


def base_crt():
    cl = np.repeat([1, 2, 3, 4], 3)
    return pd.DataFrame({"site": cl, "arm": np.repeat([0, 0, 1, 1], 3), "y": np.arange(12.0),
                         "x": np.linspace(0, 1, 12), "v": np.repeat([1.0, 2.0, 3.0, 4.0], 3)})


def mk(df, design="crt", **kw):
    return make_trial(df, design, outcome="y", treatment="arm", cluster="site",
                      individual_covariates=["x"], cluster_covariates=kw.pop("clu", ["v"]), name="my.csv", **kw)


def test_valid_and_user_frame_unchanged():
    df = base_crt()
    before = df.copy()
    td = mk(df)
    assert td.n == 12 and td.covariates == ("x", "v")
    pd.testing.assert_frame_equal(df, before)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.drop(columns="x"), r"covariate column\(s\) \['x'\] not found"),
    (lambda d: d.assign(y=["a"] * 12), "'outcome' must be numeric"),
    (lambda d: d.assign(arm=np.repeat([0, 0, 2, 2], 3)), "'treatment' must be 0/1"),
    (lambda d: d.assign(y=np.r_[np.nan, np.arange(11.0)]), r"'outcome' has missing.*rows 0"),
    (lambda d: d.assign(site=np.r_[np.nan, d.site[1:]]), "'cluster' has missing values"),
    (lambda d: d.assign(x=np.nan), "'x' is missing \\(NaN\\) in every row"),
    (lambda d: d.assign(x=1.0), "'x' is constant"),
    (lambda d: d.assign(arm=np.r_[1, np.repeat([0, 0, 1, 1], 3)[1:]]), "varies within cluster"),
    (lambda d: d.assign(arm=np.repeat([0, 1, 1, 1], 3)), "arm 0 has 1 cluster"),
    (lambda d: d.assign(site=1), "only one cluster"),
    (lambda d: d.assign(v=np.arange(12.0)), "cluster covariate 'v' varies within"),
    (lambda d: d.iloc[:0], "empty"),
])
def test_bad_input_messages(mutate, match):
    with pytest.raises(TrialDataError, match=match) as e:
        mk(mutate(base_crt()))
    assert "my.csv" in str(e.value)


def test_multisite_one_arm_cluster():
    df = base_crt().assign(arm=[0, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 0])
    with pytest.raises(TrialDataError, match=r"cluster\(s\) \[3\] have only one arm"):
        mk(df, design="multisite", clu=[])


def test_moderator_must_be_covariate():
    with pytest.raises(TrialDataError, match="moderator"):
        mk(base_crt(), moderators=["z"])


def test_covariate_matrix_equals_the_pandas_selection():
    """X() gives the values, dtype and memory layout of ``frame[cols].to_numpy(dtype=float)``
    (the estimators' floating-point results depend on the layout), for mixed column dtypes,
    any column order and subsets, and is a fresh writeable array."""
    rng = np.random.default_rng(3)
    n = 40
    f = pd.DataFrame({"site": np.repeat(["a", "b", "c", "d"], 10), "arm": np.tile([0, 1], 20),
                      "y": rng.normal(size=n), "x1": rng.normal(size=n), "k": rng.integers(0, 5, n),
                      "flag": rng.random(n) > 0.5, "x2": rng.normal(size=n).astype(np.float32)})
    td = make_trial(f, "multisite", outcome="y", treatment="arm", cluster="site",
                    individual_covariates=["x1", "k", "flag", "x2"])
    for cols in (None, ["x2", "x1"], ["k"], ["flag", "x1", "k"]):
        ref = td.frame[list(td.covariates if cols is None else cols)].to_numpy(dtype=float, copy=True)
        got = td.X(cols)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert got.tobytes(order="A") == ref.tobytes(order="A")
        assert got.flags["F_CONTIGUOUS"] == ref.flags["F_CONTIGUOUS"]
        assert got.flags["C_CONTIGUOUS"] == ref.flags["C_CONTIGUOUS"]
        assert got.flags["WRITEABLE"]
    assert td.X([]).shape == (n, 0)
    x = td.X()
    x[:] = 0.0
    assert not np.all(td.X() == 0.0)  # a copy, never a view of the table
    with pytest.raises(KeyError):
        td.X(["nope"])


def test_cluster_factors_equal_pandas_factorize():
    from clusterhte.data.trial import TrialData
    rng = np.random.default_rng(3)
    for labels in (rng.integers(5, 40, 200), rng.integers(-3, 3, 50).astype(np.int32),
                   np.array([10 ** 9, 7, 7, 10 ** 9]), rng.choice(["b", "a", "c"], 30)):
        f = pd.DataFrame({"cluster": labels, "treatment": np.zeros(labels.size), "outcome": 0.0})
        codes, uniq = TrialData(f, "multisite").cluster_factors()
        ref_codes, ref_uniq = pd.factorize(f["cluster"], sort=True)
        assert codes.dtype == ref_codes.dtype and np.array_equal(codes, ref_codes)
        pd.testing.assert_index_equal(uniq, ref_uniq)


def test_column_arrays_are_bound_to_their_frame():
    from dataclasses import replace

    from clusterhte.data.trial import TrialData
    f = pd.DataFrame({"cluster": [1, 1, 2, 2], "treatment": [0.0, 1.0, 0.0, 1.0], "outcome": [1.0, 2, 3, 4],
                      "x": [0.5, 0.25, 0.125, 1.0]})
    td = TrialData(f, "multisite", ("x",))
    plain = td.X()
    arrays = {c: f[c].to_numpy() for c in f.columns}
    assert td.with_column_arrays(arrays) is td
    assert td.X().tobytes() == plain.tobytes() and td.X().flags.writeable
    assert np.array_equal(td.outcome, [1, 2, 3, 4]) and np.array_equal(td.cluster, [1, 1, 2, 2])
    # a table made from it with another frame reads that frame, not the arrays
    other = replace(td, frame=f.assign(x=[9.0, 8.0, 7.0, 6.0]))
    assert np.array_equal(other.X()[:, 0], [9, 8, 7, 6])
    assert np.array_equal(td.subset([0, 1]).X()[:, 0], [0.5, 0.25])
    with pytest.raises(ValueError, match="does not match"):
        td.with_column_arrays({"x": np.zeros(3)})
