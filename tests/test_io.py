"""Parquet I/O: provenance round trip, atomic writes, clear errors on bad files."""

import os

import numpy as np
import pandas as pd
import pytest

from clusterhte import io


def test_provenance_round_trip(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello")
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]})
    prov = io.provenance(rule="r", inputs=[src], config={"x": 1}, seed=7)
    io.write_parquet(df, tmp_path / "out.parquet", prov=prov, csv=True)
    back = io.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(back, df)
    p = io.read_provenance(tmp_path / "out.parquet")
    assert p["rule"] == "r" and p["seed"] == 7
    assert p["inputs"][0]["sha256"] == io.sha256_file(src)
    assert p["config_hash"] == io.config_hash({"x": 1})
    assert p["package"]["name"] == "clusterhte" and "numpy" in p["libraries"]
    assert (tmp_path / "out.csv").read_text().splitlines()[0] == "a,b"


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "x.parquet"

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(io.pq, "write_table", boom)
    with pytest.raises(RuntimeError):
        io.write_parquet(pd.DataFrame({"a": [1]}), target)
    assert not target.exists()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("content,msg", [(b"", "empty"), (b"col1,col2\n1,2\n", "not a Parquet file")])
def test_bad_files_named(tmp_path, content, msg):
    p = tmp_path / "bad.parquet"
    p.write_bytes(content)
    with pytest.raises(io.InputFileError, match=msg) as e:
        io.read_parquet(p)
    assert str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(io.InputFileError, match="not found"):
        io.read_parquet(tmp_path / "nope.parquet")


def test_trial_round_trip(tmp_path, crt_linear):
    td, _ = crt_linear
    io.write_trial(td, tmp_path / "t.parquet")
    back = io.read_trial(tmp_path / "t.parquet")
    assert back.roles()["cluster_covariates"] == ["V1"]
    assert back.individual_covariates == td.individual_covariates
    np.testing.assert_array_equal(back.outcome, td.outcome)
