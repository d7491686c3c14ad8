"""Offline and without ../shared (issue 12, item 2): `make run` finishes every study it can, reports
TASSH as skipped in one line that says how to get the file, exits 0; a failed job's log holds its
error. No network: the TASSH URL is a file:// path that does not exist, shared_dir is empty."""

import pandas as pd

from workflow_utils import make_run, workdir

SHEET = ("name\tpath\tdesign\toutcome\ttreatment\tcluster\tindividual_covariates\tcluster_covariates\t"
         "moderators\tmethods\n"
         "example_crt\ttests/data/example_crt.csv\tcrt\ty\tarm\tsite\tage,female,score\turban\t\tlmm\n")


def test_offline_run_without_shared_completes_the_other_studies(tmp_path):
    url = (tmp_path / "nowhere.rda").as_uri()
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = {"seed": 5, "reps_per_chunk": 1, "shared_dir": str(empty),
           "tassh": {"methods": ["lmm"], "url": url},
           "trials": {"sheet": "config/offline.tsv", "method_overrides": {}}}
    wd = workdir(tmp_path / "wd", cfg)
    (wd / "config" / "offline.tsv").write_text(SHEET)
    r = make_run(wd, shared=empty)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert (wd / "results/reports/example_crt.html").exists()
    assert len(pd.read_parquet(wd / "results/fits/example_crt/lmm.parquet")) == 281
    assert not (wd / "results/data/tassh.parquet").exists()
    skipped = [l for l in out.splitlines() if l.startswith("TASSH skipped:")]
    assert skipped and "data/raw/tassh/bp_ghana.rda" in skipped[-1] and url in skipped[-1]
    assert "Traceback" not in out
    log = (wd / "results/logs/tassh_fetch.log").read_text()
    assert "TASSH skipped" in log and url in log
