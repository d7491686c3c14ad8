"""The user's data are never lost (issue 12, items 1 and 4): an --out that resolves to the input
(same path, ./ spelling, symlink, hard link; CSV or Parquet) is refused before any fitting, and
output files get the permissions of any new file (0666 minus the umask), not 0600."""

import os
import stat

import pandas as pd
import pytest

from clusterhte import cli, io
from conftest import ROOT

ARGS = ["--design", "crt", "--outcome", "y", "--treatment", "arm", "--cluster", "site",
        "--covariates", "age,female,score", "--cluster-covariates", "urban", "--method", "lmm"]


def fit(data, out):
    return cli.main(["fit", "--data", str(data), *ARGS, "--out", str(out)])


@pytest.mark.parametrize("kind", ["same", "dot", "symlink", "hardlink", "parquet"])
def test_out_equal_to_input_is_refused(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.chdir(tmp_path)
    src = ROOT / "tests/data/example_crt.csv"
    data = tmp_path / "trial.csv"
    if kind == "parquet":
        data = tmp_path / "trial.parquet"
        pd.read_csv(src).to_parquet(data)
    else:
        data.write_bytes(src.read_bytes())
    before = data.read_bytes()
    out = {"same": data, "dot": "./trial.csv", "symlink": tmp_path / "link.csv",
           "hardlink": tmp_path / "hard.csv", "parquet": "./trial.parquet"}[kind]
    if kind == "symlink":
        os.symlink(data, out)
    if kind == "hardlink":
        os.link(data, out)
    assert fit("trial.csv" if kind == "dot" else data, out) == 2
    err = capsys.readouterr().err
    assert "is the input file" in err and "clusterhte fit: error" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert data.read_bytes() == before


def test_outputs_respect_the_umask(tmp_path, crt_linear):
    old = os.umask(0o022)
    try:
        p = io.write_parquet(pd.DataFrame({"a": [1.0]}), tmp_path / "x.parquet", csv=True)
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / "x.csv").stat().st_mode) == 0o644
        os.umask(0o002)
        p = io.write_trial(crt_linear[0], tmp_path / "t.parquet")
        assert stat.S_IMODE(p.stat().st_mode) == 0o664
    finally:
        os.umask(old)


def test_cli_output_is_group_readable(tmp_path):
    old = os.umask(0o022)
    try:
        assert fit(ROOT / "tests/data/example_crt.csv", tmp_path / "c.csv") == 0
        assert stat.S_IMODE((tmp_path / "c.csv").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_output_folder_check_for_other_subcommands(tmp_path):
    """check_output_path(directory=True), as a subcommand writing a folder uses it."""
    (tmp_path / "f").write_text("x")
    assert cli.check_output_path(tmp_path / "newdir", suffixes=(), directory=True) == tmp_path / "newdir"
    assert cli.check_output_path(tmp_path, suffixes=(), directory=True) == tmp_path
    with pytest.raises(cli.UsageError, match="is a file; give a folder"):
        cli.check_output_path(tmp_path / "f", suffixes=(), directory=True)
    with pytest.raises(cli.UsageError, match="is a file, not a folder"):
        cli.check_output_path(tmp_path / "f" / "sub", suffixes=(), directory=True)
