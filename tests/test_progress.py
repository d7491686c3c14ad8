"""Issue 12, item 13: a long `clusterhte fit` reports progress on stderr: each counted refit
(cluster-bootstrap refits, causal-forest half-samples) with an estimate of the time left, a line
while nothing else is reported, and the total time; the numbers it computes do not change."""

import re
import time

import numpy as np

from clusterhte import cli, io
from conftest import ROOT

ARGS = ["--data", str(ROOT / "tests/data/example_crt.csv"), "--design", "crt", "--outcome", "y",
        "--treatment", "arm", "--cluster", "site", "--covariates", "age,female,score",
        "--cluster-covariates", "urban", "--method", "merf", "--param", "n_estimators=10",
        "--param", "max_iter=2", "--param", "n_bootstrap=4"]


def test_bootstrap_refits_with_time_left(tmp_path, capsys):
    assert cli.main(["fit", *ARGS, "--out", str(tmp_path / "a.parquet")]) == 0
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if "bootstrap refit" in l]
    assert lines, err
    assert all(re.search(r"bootstrap refit \d/4 done, \S+ elapsed, about \S+ left", l) for l in lines)
    assert "bootstrap refit 3/4 done" in lines[-1]  # the last one before the end is always shown
    assert re.search(r"merf: fit finished in \S+", err)
    assert cli.main(["fit", *ARGS, "--quiet", "--out", str(tmp_path / "b.parquet")]) == 0
    assert "bootstrap refit" not in capsys.readouterr().err
    np.testing.assert_array_equal(io.read_parquet(tmp_path / "a.parquet")["upper"],
                                  io.read_parquet(tmp_path / "b.parquet")["upper"])


def test_heartbeat_while_nothing_is_reported(capsys):
    import sys
    with cli.Heartbeat("fit: x", stream=sys.stderr, interval=0.1):
        time.sleep(0.35)
    err = capsys.readouterr().err
    assert err.count("fit: x: still fitting") >= 2 and "fit: x: fit finished in" in err


def test_counters_removed_after_the_fit():
    from clusterhte.methods import bootstrap, em_trees
    before = bootstrap.resample_clusters
    with cli.Heartbeat("fit: merf", method="merf", params={"n_bootstrap": 3}, interval=60):
        assert em_trees.resample_clusters is not before
    assert bootstrap.resample_clusters is before and em_trees.resample_clusters is before


def test_mcmc_chains_with_time_left(tmp_path, capsys):
    args = ARGS[:ARGS.index("--method")]
    assert cli.main(["fit", *args, "--method", "mixedbart", "--param", "num_chains=3", "--param",
                     "num_burnin=5", "--param", "num_mcmc=5", "--param", "num_trees=5",
                     "--out", str(tmp_path / "c.parquet")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"MCMC chain 2/3 done, \S+ elapsed, about \S+ left", err), err
