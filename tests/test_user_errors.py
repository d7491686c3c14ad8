"""Issue 12, items 5-10: each bad input gives one line naming what is wrong, exit code 2, before
any fitting, and no output; the trial sheet's errors name the sheet line and the file."""

from __future__ import annotations


import pandas as pd
import pytest

from clusterhte import cli
from clusterhte import config as chconfig
from clusterhte.data.user import TrialDataWarning, load_trial
from test_bad_input import good_crt

HEADER = "\t".join(chconfig.TRIAL_COLUMNS)


def fit(tmp_path, df_or_path, *extra, covs="x,z", method="lmm", out=None, roles=None):
    if isinstance(df_or_path, pd.DataFrame):
        data = tmp_path / "t.csv"
        df_or_path.to_csv(data, index=False)
    else:
        data = df_or_path
    out = out or tmp_path / "cates.parquet"
    roles = roles or ["--outcome", "y", "--treatment", "arm", "--cluster", "site"]
    code = cli.main(["fit", "--data", str(data), "--design", "crt", *roles, "--covariates", covs,
                     "--method", method, "--out", str(out), *extra])
    return code, out


def one_line_error(capsys, expect):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("clusterhte fit: error:"), err
    assert expect in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- item 5: names that clash
@pytest.mark.parametrize("reserved", ["outcome", "treatment", "cluster"])
def test_covariate_with_a_role_name(tmp_path, capsys, reserved):
    df = good_crt().rename(columns={"x": reserved})
    code, out = fit(tmp_path, df, covs=f"{reserved},z")
    assert code == 2 and not out.exists()
    one_line_error(capsys, f"covariate '{reserved}' has a reserved name")


@pytest.mark.parametrize("col,role", [("y", "outcome"), ("arm", "treatment"), ("site", "cluster")])
def test_covariate_equal_to_a_role_column(tmp_path, capsys, col, role):
    code, out = fit(tmp_path, good_crt(), covs=f"x,{col}")
    assert code == 2 and not out.exists()
    one_line_error(capsys, f"covariate '{col}' is the {role} column")


def test_duplicated_column_names(tmp_path, capsys):
    f = tmp_path / "dup.csv"
    d = good_crt()
    d.to_csv(f, index=False)
    text = f.read_text().splitlines()
    text[0] = text[0].replace(",z,", ",x,")  # two columns called x
    f.write_text("\n".join(text) + "\n")
    code, out = fit(tmp_path, f, covs="x")
    assert code == 2 and not out.exists()
    one_line_error(capsys, "column name(s) ['x'] appear more than once")


# ---------------------------------------------------------------- item 6: collinear, overflow
def test_collinear_covariates_named(tmp_path, capsys):
    d = good_crt().assign(w=lambda d: 2 * d.x - 0.5 * d.z)
    code, out = fit(tmp_path, d, covs="x,z,w")
    assert code == 2 and not out.exists()
    line = one_line_error(capsys, "collinear")
    assert "['x', 'z', 'w']" in line


def test_overflow_named(tmp_path, capsys):
    d = good_crt().assign(x=lambda d: d.x * 1e300)
    code, out = fit(tmp_path, d)
    assert code == 2 and not out.exists()
    one_line_error(capsys, "column 'x' has values up to")


def test_outcome_overflow_named(tmp_path, capsys):
    d = good_crt().assign(y=lambda d: d.y * 1e300)
    code, out = fit(tmp_path, d)
    assert code == 2 and not out.exists()
    one_line_error(capsys, "column 'y (outcome)' has values up to")


# ---------------------------------------------------------------- item 7: hyperparameter values
@pytest.mark.parametrize("method,param,expect", [
    ("merf", "n_bootstrap=-3", "'n_bootstrap' must be an integer >= 0"),
    ("merf", "n_estimators=0", "'n_estimators' must be > 0"),
    ("merf", "tol=.nan", "'tol' must be a finite number"),
    ("gpboost", "learning_rate=.inf", "'learning_rate' must be a finite number"),
    ("lmm", "interactions=[nosuchcol]", "'interactions' names ['nosuchcol']"),
    ("lmm", "interactions=[x", "not valid YAML"),
])
def test_bad_hyperparameter_values_before_fitting(tmp_path, capsys, monkeypatch, method, param, expect):
    from clusterhte.stages import apply

    def no_fit(*a, **k):
        raise AssertionError("fitting started")
    monkeypatch.setattr(apply, "fit", no_fit)
    code, out = fit(tmp_path, good_crt(), "--param", param, method=method)
    assert code == 2 and not out.exists()
    one_line_error(capsys, expect)


def test_sheet_nan_hyperparameter_stops_the_workflow():
    cfg = {"seed": 1, "reps_per_chunk": 1,
           "crt": {"clusters": [10], "cluster_sizes": [5], "iccs": [0.1], "f0": ["lin"], "tau": ["hom"],
                   "replicates": 1, "methods": ["merf"], "method_overrides": {"merf": {"tol": float("nan")}}}}
    with pytest.raises(chconfig.ConfigError, match="'tol' must be a finite number"):
        chconfig.validate_methods(cfg, {}, "crt")


# ---------------------------------------------------------------- item 8: unwritable --out
@pytest.mark.parametrize("where", ["under_a_file", "proc", "directory"])
def test_unwritable_out_before_fitting(tmp_path, capsys, monkeypatch, where):
    from clusterhte.stages import apply

    monkeypatch.setattr(apply, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("fitting started")))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.parquet").mkdir()
    out = {"under_a_file": tmp_path / "afile" / "c.parquet", "proc": "/proc/c.parquet",
           "directory": tmp_path / "adir.parquet"}[where]
    code, _ = fit(tmp_path, good_crt(), out=out)
    assert code == 2
    one_line_error(capsys, {"under_a_file": "is a file, not a folder", "proc": "cannot be written",
                            "directory": "is an existing directory"}[where])


# ---------------------------------------------------------------- item 9: bool and constant outcome
def test_bool_outcome_lists_rows(tmp_path, capsys):
    d = good_crt().assign(y=lambda d: d.y > 0)
    f = tmp_path / "b.parquet"
    d.to_parquet(f)
    code, out = fit(tmp_path, f)
    assert code == 2 and not out.exists()
    line = one_line_error(capsys, "stored as true/false at rows 0, 1, 2")
    assert "0 and 1" in line


def test_constant_outcome_warns(tmp_path):
    f = tmp_path / "c.csv"
    good_crt().assign(y=1.0).to_csv(f, index=False)
    with pytest.warns(TrialDataWarning, match="outcome column 'y' is constant"):
        load_trial(f, "crt", outcome="y", treatment="arm", cluster="site", individual_covariates=["x"])


def test_constant_outcome_warning_on_stderr(tmp_path, capsys):
    code, out = fit(tmp_path, good_crt().assign(y=1.0))
    err = capsys.readouterr().err
    assert code == 0 and "clusterhte fit: warning:" in err and "is constant" in err


# ---------------------------------------------------------------- item 10: the trial sheet
def sheet(tmp_path, text):
    p = tmp_path / "trials.tsv"
    p.write_text(text)
    return {"seed": 1, "reps_per_chunk": 1, "trials": {"sheet": str(p)}}


@pytest.mark.parametrize("name", sorted(chconfig.RESERVED_NAMES))
def test_builtin_dataset_names_are_reserved(tmp_path, name):
    cfg = sheet(tmp_path, HEADER + f"\n{name}\tx.csv\tcrt\ty\tarm\tsite\tx\t\t\tlmm\n")
    with pytest.raises(chconfig.ConfigError, match=f"trial name '{name}' is reserved"):
        chconfig.load_trials(cfg)


def test_hash_in_path_and_comment_lines(tmp_path):
    cfg = sheet(tmp_path, "# my trials\n" + HEADER + "\nmine\tdata/run#2/t.csv\tcrt\ty\tarm\tsite\tx,z\t\t\tlmm\n"
                "  # a commented row\n")
    rows = chconfig.load_trials(cfg)
    assert list(rows) == ["mine"] and rows["mine"]["path"] == "data/run#2/t.csv"
    assert rows["mine"]["individual_covariates"] == ["x", "z"]


def test_empty_sheet(tmp_path):
    with pytest.raises(chconfig.ConfigError, match="the trial sheet is empty"):
        chconfig.load_trials(sheet(tmp_path, ""))


def test_sheet_with_spaces_says_tabs(tmp_path):
    text = HEADER.replace("\t", "  ") + "\nmine  x.csv  crt  y  arm  site  x    lmm\n"
    with pytest.raises(chconfig.ConfigError, match="separate the columns with tabs, not spaces"):
        chconfig.load_trials(sheet(tmp_path, text))


def test_invalid_name_plain_message(tmp_path):
    with pytest.raises(chconfig.ConfigError) as e:
        chconfig.load_trials(sheet(tmp_path, HEADER + "\nmy trial\tx.csv\tcrt\ty\tarm\tsite\tx\t\t\tlmm\n"))
    assert "must start with a letter and contain only letters, digits" in str(e.value)
    assert "^[" not in str(e.value)


# A bad data row in the workflow (named trial and file, error in the job's log, other trials
# still built): tests/test_offline.py.


def test_a_trial_too_small_for_the_model_fails_with_the_reason_and_no_traceback(tmp_path, capsys):
    """6 clusters with two cluster covariates interacting with treatment: the LMM refuses (no
    between-cluster df); stderr names the columns and the remedy, without a traceback, and no file
    is written. Following the remedy fits."""
    import numpy as np

    from clusterhte.simulate.battery import simulate

    trial, _ = simulate("tiny", np.random.default_rng(0))
    df = trial.frame.rename(columns={"outcome": "y", "treatment": "arm", "cluster": "site"})
    extra = ["--cluster-covariates", "V1,V2"]
    code, out = fit(tmp_path, df, *extra, covs="X1,X2,X3,X4")
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "Traceback" not in err
    assert "6 clusters and the model 6 independent cluster-level columns" in err
    assert "hyperparameter 'interactions'" in err
    code, out = fit(tmp_path, df, *extra, "--param", "interactions=[X1,X2,X3,X4]", covs="X1,X2,X3,X4")
    assert code == 0 and out.exists()
