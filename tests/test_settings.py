"""Issue 12, item 12: one source of hyperparameters. `clusterhte fit` reads config/methods.yaml and
the trials.method_overrides of the run config named by --settings (quick: config/config.yaml, the
default and what the trial sheet uses; paper: config/paper.yaml), so edits to methods.yaml reach
the CLI. (tests/test_reports.py checks that the CLI and the sheet give identical CATEs.)"""

import shutil

import numpy as np
import yaml

from clusterhte import cli, io
from clusterhte import config as chconfig
from conftest import ROOT

ARGS = ["--data", str(ROOT / "tests/data/example_crt.csv"), "--design", "crt", "--outcome", "y",
        "--treatment", "arm", "--cluster", "site", "--covariates", "age,female,score",
        "--cluster-covariates", "urban"]


def hyper(out):
    return io.read_provenance(out)["config"]["hyperparameters"]


def test_settings_are_the_sheets():
    mcfg = chconfig.load_yaml(ROOT / "config/methods.yaml")
    for settings, run in (("quick", "config.yaml"), ("paper", "paper.yaml")):
        trials = chconfig.load_yaml(ROOT / "config" / run)["trials"]
        for m in ("ribart", "cf", "gpboost", "lmm"):
            assert cli.fit_settings(m, settings, ROOT / "config") == chconfig.method_params(mcfg, trials, m)
    quick, paper = cli.fit_settings("ribart", "quick"), cli.fit_settings("ribart", "paper")
    quick_override = chconfig.load_yaml(ROOT / "config/config.yaml")["trials"]["method_overrides"]["ribart"]
    assert all(quick[k] == v for k, v in quick_override.items()) and quick != paper
    assert paper == dict(sorted(mcfg["ribart"].items()))


def test_cli_reads_edits_to_methods_yaml(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "config", tmp_path / "config")
    mfile = tmp_path / "config/methods.yaml"
    mcfg = yaml.safe_load(mfile.read_text())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["fit", *ARGS, "--method", "lmm", "--out", "default.parquet"]) == 0
    mcfg["lmm"] = {"interactions": ["score"], "reml": True}
    mfile.write_text(yaml.safe_dump(mcfg))
    assert cli.main(["fit", *ARGS, "--method", "lmm", "--out", "edited.parquet"]) == 0
    assert cli.main(["fit", *ARGS, "--method", "lmm", "--config-dir", str(ROOT / "config"),
                     "--param", "interactions=[score]", "--out", "param.parquet"]) == 0
    assert hyper("edited.parquet")["interactions"] == ["score"]
    assert hyper("default.parquet")["interactions"] is None
    a, b, c = (io.read_parquet(f)["cate"].to_numpy() for f in ("default.parquet", "edited.parquet", "param.parquet"))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(b, c)


def test_paper_settings_switch(tmp_path):
    out = tmp_path / "p.parquet"
    assert cli.main(["fit", *ARGS, "--method", "merf", "--settings", "paper", "--param", "n_bootstrap=0",
                     "--param", "n_estimators=20", "--param", "max_iter=2", "--out", str(out)]) == 0
    h = hyper(out)
    assert h["n_bootstrap"] == 0 and h["n_estimators"] == 20
    assert io.read_provenance(out)["config"]["settings"] == "paper"
