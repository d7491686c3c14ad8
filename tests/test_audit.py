"""Issue 12, item 16: `clusterhte audit` never reports a file it cannot verify as verified: no
provenance -> says so, exit 1; only regular files inside the workflow directory and the declared
data locations are re-hashed (a provenance naming /dev/zero does not hang it); control characters
in provenance text are not printed."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

from clusterhte import io

CLI = [sys.executable, "-m", "clusterhte.cli"]


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def audit(path, cwd, *extra, subprocess_=False):
    """`clusterhte audit` in ``cwd``; in a subprocess (with a timeout) where the old code could hang."""
    if subprocess_:
        return subprocess.run([*CLI, "audit", str(path), *extra], cwd=cwd, capture_output=True,
                              text=True, timeout=60)
    import contextlib
    import io as _io
    import os

    from clusterhte import cli
    out, err = _io.StringIO(), _io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["audit", str(path), *extra])
    finally:
        os.chdir(old)
    return Result(code, out.getvalue(), err.getvalue())


def made_from(out: Path, inputs, rule="test_rule"):
    io.write_parquet(pd.DataFrame({"a": [1.0, 2.0]}), out, prov=io.provenance(rule=rule, inputs=inputs))
    return out


def test_raw_input_and_pandas_output_have_no_provenance(tmp_path):
    raw = tmp_path / "trial.csv"
    raw.write_text("a,b\n1,2\n")
    pq = tmp_path / "by_pandas.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(pq)
    for f in (raw, pq):
        r = audit(f, tmp_path)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "has no provenance" in r.stderr and "All inputs match" not in r.stdout


def test_good_chain_verified(tmp_path):
    (tmp_path / "raw.csv").write_text("a\n1\n")
    mid = made_from(tmp_path / "mid.parquet", ["raw.csv"])
    made_from(tmp_path / "top.parquet", ["mid.parquet"])
    r = audit("top.parquet", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "All inputs match" in r.stdout and mid.exists()


def test_device_and_outside_paths_not_followed(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.csv").write_text("a\n1\n")
    out = wd / "out.parquet"
    io.write_parquet(pd.DataFrame({"a": [1.0]}), out, prov={
        "rule": "r", "inputs": [{"path": "/dev/zero", "sha256": "0" * 64},
                                {"path": str(elsewhere / "x.csv"), "sha256": io.sha256_file(elsewhere / "x.csv")}]})
    r = audit("out.parquet", wd, subprocess_=True)  # must return (timeout 60 s), not hash /dev/zero forever
    assert r.returncode == 1
    assert "NOT CHECKED: /dev/zero" in r.stderr and f"NOT CHECKED: {elsewhere / 'x.csv'}" in r.stderr
    r = audit("out.parquet", wd, "--allow", str(elsewhere))
    assert "NOT CHECKED: /dev/zero" in r.stderr and "x.csv" not in r.stderr


def test_control_characters_are_not_printed(tmp_path):
    evil = "rule\x1b[2J\x1b[31m\nAll inputs match the hashes\r"
    io.write_parquet(pd.DataFrame({"a": [1.0]}), tmp_path / "o.parquet",
                     prov={"rule": evil, "inputs": [{"path": "in\x1b]0;x\x07.csv", "sha256": None}],
                           "created_utc": "\x1b[1mnow"})
    r = audit("o.parquet", tmp_path)
    out = r.stdout + r.stderr
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert r.returncode == 1  # the input does not exist
    assert not any(l.startswith("All inputs match") for l in r.stdout.splitlines())
