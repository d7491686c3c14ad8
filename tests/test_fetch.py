"""Verified fetch of raw data files: local copy, file:// download, hash mismatch, offline."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clusterhte.data import tassh
from clusterhte.data.fetch import DataFetchError, ensure_file, sha256_of

SHARED_RDA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tassh" / "bp_ghana.rda"
CONTENT = b"site,patient,sbp\n1,1,150\n" * 50


@pytest.fixture
def source(tmp_path):
    p = tmp_path / "src" / "file.bin"
    p.parent.mkdir()
    p.write_bytes(CONTENT)
    return p, hashlib.sha256(CONTENT).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_sha256_of_matches_hashlib(source):
    p, h = source
    assert sha256_of(p) == h


def test_download_file_url(tmp_path, source):
    p, h = source
    dest = tmp_path / "raw" / "sub" / "file.bin"
    out = ensure_file(dest, h, url=p.as_uri())
    assert out == dest and dest.read_bytes() == CONTENT
    assert _leftovers(dest.parent) == ["file.bin"]  # no temporary file left behind


def test_local_copy_preferred_over_url(tmp_path, source):
    p, h = source
    dest = tmp_path / "raw" / "file.bin"
    ensure_file(dest, h, url=(tmp_path / "nowhere.bin").as_uri(),
                local_copies=[tmp_path / "absent.bin", p])
    assert dest.read_bytes() == CONTENT


def test_existing_dest_with_right_hash_is_kept(tmp_path, source):
    p, h = source
    dest = tmp_path / "file.bin"
    dest.write_bytes(CONTENT)
    mtime = dest.stat().st_mtime_ns
    ensure_file(dest, h, url="file:///definitely/not/here.bin")
    assert dest.stat().st_mtime_ns == mtime


def test_download_hash_mismatch_names_both_hashes(tmp_path, source):
    p, h = source
    wrong = "0" * 64
    dest = tmp_path / "raw" / "file.bin"
    with pytest.raises(DataFetchError) as ei:
        ensure_file(dest, wrong, url=p.as_uri())
    msg = str(ei.value)
    assert wrong in msg and h in msg and str(dest) in msg
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_local_copy_hash_mismatch(tmp_path, source):
    p, h = source
    wrong = "a" * 64
    dest = tmp_path / "file.bin"
    with pytest.raises(DataFetchError) as ei:
        ensure_file(dest, wrong, local_copies=[p])
    assert wrong in str(ei.value) and h in str(ei.value) and str(p) in str(ei.value)
    assert not dest.exists()


def test_existing_dest_with_wrong_hash(tmp_path, source):
    p, h = source
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"corrupted")
    with pytest.raises(DataFetchError) as ei:
        ensure_file(dest, h, url=p.as_uri())
    msg = str(ei.value)
    assert h in msg and hashlib.sha256(b"corrupted").hexdigest() in msg and str(dest) in msg


def test_missing_source_names_destination_and_url(tmp_path, source):
    _, h = source
    dest = tmp_path / "raw" / "file.bin"
    url = (tmp_path / "offline" / "file.bin").as_uri()
    with pytest.raises(DataFetchError) as ei:
        ensure_file(dest, h, url=url, local_copies=[tmp_path / "absent.bin"])
    msg = str(ei.value)
    assert str(dest) in msg and url in msg and h in msg
    assert not dest.exists()


def test_no_url_and_no_copy(tmp_path, source):
    _, h = source
    dest = tmp_path / "file.bin"
    with pytest.raises(DataFetchError, match="no URL is pinned") as ei:
        ensure_file(dest, h, local_copies=[tmp_path / "absent.bin"])
    assert str(dest) in str(ei.value) and "absent.bin" in str(ei.value)


def test_bad_expected_hash(tmp_path):
    with pytest.raises(DataFetchError, match="64 hex digits"):
        ensure_file(tmp_path / "x", "abc123")


def test_tassh_pins():
    assert tassh.URL.startswith("https://") and tassh.URL.endswith("/data/bp_ghana.rda")
    assert len(tassh.SHA256) == 64


@pytest.mark.skipif(not SHARED_RDA.is_file(), reason=f"TASSH file not found at {SHARED_RDA}")
def test_tassh_shared_copy_matches_pinned_hash(tmp_path):
    dest = tmp_path / "data" / "raw" / "tassh" / "bp_ghana.rda"
    ensure_file(dest, tassh.SHA256, url=None, local_copies=[SHARED_RDA])
    assert dest.stat().st_size == 17344
