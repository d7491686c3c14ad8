"""The bad-input catalogue: every case gives one clear error naming the file, column/key and rows,
and leaves no output behind. File-level cases run through ``clusterhte fit`` (exit code 2 and a
one-line message on stderr); configuration cases through the validator the Snakefile calls."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pandas as pd
import pytest

from clusterhte import cli
from clusterhte import config as chconfig
from clusterhte.data.trial import TrialDataError
from clusterhte.data.user import load_trial
from clusterhte.io import InputFileError, read_parquet

ROLES = ["--outcome", "y", "--treatment", "arm", "--cluster", "site", "--covariates", "x,z",
         "--cluster-covariates", "v"]


def good_crt(design="crt") -> pd.DataFrame:
    rng = np.random.default_rng(1)
    site = np.repeat(np.arange(1, 9), 5)
    arm = np.repeat([0, 1, 0, 1, 0, 1, 0, 1], 5) if design == "crt" else np.tile([0, 1, 0, 1, 1], 8)
    return pd.DataFrame({"pid": np.arange(40), "site": site, "arm": arm, "y": rng.normal(size=40),
                         "x": rng.normal(size=40), "z": rng.normal(size=40),
                         "v": np.repeat(rng.normal(size=8), 5)})


def run_fit(tmp_path, data_path, *extra, design="crt", method="lmm"):
    out = tmp_path / "cates.parquet"
    code = cli.main(["fit", "--data", str(data_path), "--design", design, *ROLES, "--method", method,
                     "--out", str(out), *extra])
    return code, out


# (case name, how to change the good table, design, text the message must contain)
TABLE_CASES = [
    ("missing outcome column", lambda d: d.drop(columns="y"), "crt", "outcome column 'y' not found"),
    ("missing covariate column", lambda d: d.drop(columns="z"), "crt", "['z'] not found"),
    ("non-numeric outcome", lambda d: d.assign(y=d.y.astype(str).where(d.index != 3, "high")), "crt",
     "column 'y' (outcome) must be numeric; non-numeric values at rows 3"),
    ("treatment not 0/1", lambda d: d.assign(arm=d.arm * 2), "crt", "column 'arm' (treatment) must be 0/1"),
    ("treatment varies within a CRT cluster", lambda d: d.assign(arm=np.where(d.index == 0, 1, d.arm)), "crt",
     "varies within cluster(s) [1]"),
    ("one-cluster arm in a CRT", lambda d: d.assign(arm=(d.site == 1).astype(int)), "crt", "arm 1 has 1 cluster"),
    ("multisite cluster with one arm", lambda d: d.assign(arm=np.where(d.site == 3, 1, d.arm)), "multisite",
     "cluster(s) [3] have only one arm"),
    ("one cluster only", lambda d: d.assign(site=1), "crt", "only one cluster"),
    ("NaN outcome", lambda d: d.assign(y=np.where(d.index == 7, np.nan, d.y)), "crt",
     "column 'y' (outcome) has missing or infinite values at rows 7"),
    ("NaN cluster id", lambda d: d.assign(site=np.where(d.index == 2, np.nan, d.site)), "crt",
     "column 'site' (cluster) has missing values at rows 2"),
    ("covariate constant everywhere", lambda d: d.assign(x=3.0), "crt", "covariate 'x' is constant"),
    ("covariate all NaN", lambda d: d.assign(z=np.nan), "crt", "covariate 'z' is missing (NaN) in every row"),
    ("covariate partly NaN", lambda d: d.assign(z=np.where(d.index == 5, np.nan, d.z)), "crt",
     "covariate 'z' has missing or infinite values at rows 5"),
    ("covariate not numeric", lambda d: d.assign(x=np.where(d.index < 20, "a", "b")), "crt",
     "covariate 'x' must be numeric"),
    ("cluster covariate varies within cluster", lambda d: d.assign(v=d.x), "crt",
     "cluster covariate 'v' varies within cluster(s)"),
    ("header without rows", lambda d: d.iloc[:0], "crt", "has a header but no rows"),
]


@pytest.mark.parametrize("name,mutate,design,expect", TABLE_CASES, ids=[c[0] for c in TABLE_CASES])
def test_table_case_through_cli(tmp_path, capsys, name, mutate, design, expect):
    f = tmp_path / "trial.csv"
    mutate(good_crt(design)).to_csv(f, index=False)
    before = f.read_bytes()
    code, out = run_fit(tmp_path, f, design=design, method="lmm" if design == "crt" else "q-fe")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert expect in err and str(f) in err, err
    assert not out.exists() and f.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_duplicated_id(tmp_path, capsys):
    f = tmp_path / "trial.csv"
    good_crt().assign(pid=lambda d: np.where(d.index == 9, 8, d.pid)).to_csv(f, index=False)
    code, out = run_fit(tmp_path, f, "--id", "pid")
    err = capsys.readouterr().err
    assert code == 2 and "id column 'pid' has duplicated values at rows 8, 9" in err and not out.exists()


def test_moderator_not_among_covariates(tmp_path, capsys):
    f = tmp_path / "trial.csv"
    good_crt("multisite").to_csv(f, index=False)
    code, out = run_fit(tmp_path, f, "--moderators", "x,w", design="multisite", method="q-fe")
    err = capsys.readouterr().err
    assert code == 2 and "moderator(s) ['w'] are not among the covariates" in err and not out.exists()


@pytest.mark.parametrize("name,content,suffix,expect", [
    ("empty file", b"", ".csv", "the file is empty (0 bytes)"),
    ("wrong file type", b"a,b\n1,2\n", ".xlsx", "unsupported file type '.xlsx'"),
    ("not really Parquet", b"site,arm,y\n1,0,2\n", ".parquet", "not a Parquet file"),
    ("not really Stata", b"hello", ".dta", "could not be read as stata"),
])
def test_file_cases(tmp_path, capsys, name, content, suffix, expect):
    f = tmp_path / f"trial{suffix}"
    f.write_bytes(content)
    code, out = run_fit(tmp_path, f)
    err = capsys.readouterr().err
    assert code == 2 and expect in err and str(f) in err, err
    assert not out.exists()


def test_missing_file(tmp_path, capsys):
    code, out = run_fit(tmp_path, tmp_path / "nope.csv")
    assert code == 2 and "nope.csv: file not found" in capsys.readouterr().err


def test_unknown_method_and_wrong_design_and_bad_param(tmp_path, capsys):
    f = tmp_path / "trial.csv"
    good_crt().to_csv(f, index=False)
    assert run_fit(tmp_path, f, method="xgboost")[0] == 2
    assert "unknown method 'xgboost'" in capsys.readouterr().err
    assert run_fit(tmp_path, f, method="q-fe")[0] == 2
    assert "is for multisite trials, not --design crt" in capsys.readouterr().err
    assert run_fit(tmp_path, f, "--param", "interactions=3")[0] == 2
    assert "hyperparameter 'interactions'" in capsys.readouterr().err
    assert run_fit(tmp_path, f, "--param", "nonsense=1")[0] == 2
    assert "unknown hyperparameter(s) ['nonsense']" in capsys.readouterr().err


def test_truncated_parquet_is_refused(tmp_path):
    from clusterhte import io

    p = tmp_path / "t.parquet"
    io.write_parquet(good_crt(), p)
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(InputFileError, match="t.parquet"):
        read_parquet(p)


def test_sha256_mismatch(tmp_path):
    from clusterhte.data.fetch import DataFetchError, ensure_file

    src = tmp_path / "copy.rda"
    src.write_bytes(b"not the trial data")
    wrong = "0" * 64
    got = hashlib.sha256(b"not the trial data").hexdigest()
    dest = tmp_path / "raw" / "bp_ghana.rda"
    with pytest.raises(DataFetchError) as e:
        ensure_file(dest, wrong, url=None, local_copies=[src])
    assert wrong in str(e.value) and got in str(e.value)
    assert not dest.exists()


# ------------------------------------------------------------------ configuration cases
GOOD = {"seed": 1, "reps_per_chunk": 2,
        "otr": {"designs": ["d1"], "sizes": [[6, 10]], "replicates": 2, "methods": ["q-fe"]}}


@pytest.mark.parametrize("change,key", [
    (lambda c: c["otr"].update(replicates=-3), "otr.replicates"),
    (lambda c: c["otr"].update(replicates=0), "otr.replicates"),
    (lambda c: c["otr"].update(designs=["d9"]), "otr.designs[0]"),
    (lambda c: c["otr"].update(methods=["q-fe", "magic"]), "otr.methods[1]"),
    (lambda c: c["otr"].update(methods=["lmm"]), "otr.methods[0]"),
    (lambda c: c.update(reps_per_chunk="ten"), "reps_per_chunk"),
    (lambda c: c.update(crt={"clusters": [31], "cluster_sizes": [20], "iccs": [0.1], "f0": ["lin"],
                             "tau": ["hom"], "replicates": 1, "methods": ["lmm"]}), "crt.clusters[0]"),
    (lambda c: c.update(trials={"sheet": "no/such/sheet.tsv"}), "trials.sheet"),
])
def test_config_cases(change, key):
    cfg = copy.deepcopy(GOOD)
    change(cfg)
    with pytest.raises(chconfig.ConfigError) as e:
        chconfig.validate(cfg, {})
    assert key in str(e.value) and "\n" not in str(e.value)


def test_trial_sheet_bad_design(tmp_path):
    sheet = tmp_path / "trials.tsv"
    sheet.write_text("name\tpath\tdesign\toutcome\ttreatment\tcluster\tindividual_covariates\t"
                     "cluster_covariates\tmoderators\tmethods\n"
                     "mine\tx.csv\tstepped\ty\tarm\tsite\tx\t\t\t\n")
    with pytest.raises(chconfig.ConfigError, match=r"trials.tsv line 2.*design"):
        chconfig.validate(dict(GOOD, trials={"sheet": str(sheet)}), {})


def test_library_error_names_user_columns(tmp_path):
    f = tmp_path / "t.csv"
    good_crt().assign(arm=lambda d: d.arm + 5).to_csv(f, index=False)
    with pytest.raises(TrialDataError, match=r"t.csv: column 'arm' \(treatment\) must be 0/1"):
        load_trial(f, "crt", outcome="y", treatment="arm", cluster="site", individual_covariates=["x"])
