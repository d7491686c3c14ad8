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


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib
    for data in (b"", b"abc", os.urandom(3 << 20)):
        f = tmp_path / "f.bin"
        f.write_bytes(data)
        assert io.sha256_file(f) == hashlib.sha256(data).hexdigest()


def test_recorded_sha256_is_used_only_for_the_unchanged_file(tmp_path):
    import pyarrow as pa

    from clusterhte.stages.fitting import chunk_provenance

    f = tmp_path / "chunk0.parquet"
    io.write_table(pa.table({"a": np.arange(1000.0)}), f, prov={}, record_sha256=True)
    side = io.sha256_sidecar(f)
    assert side.exists() and side.name == ".chunk0.parquet.sha256"
    assert io.sha256_recorded(f) == io.sha256_file(f)
    # the record is what readers use while the file is unchanged (a planted hash shows it) ...
    rec = __import__("json").loads(side.read_text())
    side.write_text(io.canonical_json(dict(rec, sha256="0" * 64)))
    assert io.sha256_recorded(f) == "0" * 64
    # ... and never once the file changed, even with the same size and modification time
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[8] ^= 1
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert io.sha256_recorded(f) == io.sha256_file(f) != "0" * 64
    # a replaced file (new inode), and the provenance records built from it
    io.write_table(pa.table({"a": np.arange(999.0)}), f, prov={})  # no record: the old one is stale
    prov = chunk_provenance(rule="r", config={})
    assert prov([f])["inputs"][0]["sha256"] == io.sha256_file(f)
    assert io.provenance(rule="r", inputs=[f])["inputs"][0]["sha256"] == io.sha256_file(f)
    # a sidecar that is not a record is ignored
    side.write_text("not json")
    assert io.sha256_recorded(f) == io.sha256_file(f)
    # a reader that hashes on a miss can record the hash for the next reader (the workflow: the
    # output is touched after its job), and a touch invalidates the record again
    prov = chunk_provenance(rule="r", config={}, record_sha256=True)
    assert prov([f])["inputs"][0]["sha256"] == io.sha256_file(f)
    rec = __import__("json").loads(side.read_text())
    assert rec["sha256"] == io.sha256_file(f) and rec["identity"][0] == f.stat().st_size
    side.write_text(io.canonical_json(dict(rec, sha256="1" * 64)))
    assert io.sha256_recorded(f) == "1" * 64
    f.touch()
    assert io.sha256_recorded(f) == io.sha256_file(f)
