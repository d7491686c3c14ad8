"""`make run` finishes every study it can (issue 12, item 2, and the README's "Resuming and working
offline"):

1. offline and without ../shared: TASSH is reported as skipped in one line that says where to get
   the file and where to put it, every other study is built, exit status 0, and the next run tries
   the download again (and has nothing else to do);
2. a job that fails (a trial with a bad file) stops only what depends on it: the other trials are
   built, the exit status is non-zero and the job's log holds its one-line error.

No network: the TASSH URL is a file:// path that does not exist, shared_dir is an empty folder.
The second run also checks the sheet's ``larger_is_better: false`` (item 14): same trial and
method, every decision reversed."""

import numpy as np
import pandas as pd

from test_bad_input import good_crt
from workflow_utils import make_run, planned_jobs, snakemake, workdir

HEAD = ("name\tpath\tdesign\toutcome\ttreatment\tcluster\tindividual_covariates\tcluster_covariates\t"
        "moderators\tmethods\tlarger_is_better\n")
ROW = "\ttests/data/example_crt.csv\tcrt\ty\tarm\tsite\tage,female,score\turban\t\tlmm\t"


def test_offline_run_without_shared_completes_the_other_studies(tmp_path):
    url = (tmp_path / "nowhere.rda").as_uri()
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = {"seed": 5, "reps_per_chunk": 1, "shared_dir": str(empty),
           "tassh": {"methods": ["lmm"], "url": url},
           "trials": {"sheet": "config/offline.tsv", "method_overrides": {}}}
    wd = workdir(tmp_path / "wd", cfg)
    sheet = wd / "config" / "offline.tsv"
    sheet.write_text(HEAD + "example_crt" + ROW + "true\n")
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
    # the next run tries again to get the file (and has nothing else to do)
    r = snakemake(wd, "-n", "--config", f"shared_dir={empty}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert planned_jobs(r.stdout) == {"tassh_fetch": 1, "all": 1}, r.stdout[-2000:]

    # 2. a failing trial does not stop the others; the exit status says something failed
    good_crt().assign(arm=lambda d: d.arm * 2).to_csv(wd / "bad.csv", index=False)
    sheet.write_text(HEAD + "example_crt" + ROW + "true\n" + "down" + ROW + "false\n"
                     "broken\tbad.csv\tcrt\ty\tarm\tsite\tx,z\tv\t\tlmm\ttrue\n")
    r = make_run(wd, shared=empty)
    assert r.returncode != 0
    assert (wd / "results/reports/down.html").exists()
    assert not (wd / "results/data/broken.parquet").exists()
    log = (wd / "results/logs/trial_clean/broken.log").read_text()
    assert "trial 'broken'" in log and "bad.csv: column 'arm' (treatment) must be 0/1" in log
    up = pd.read_parquet(wd / "results/fits/example_crt/lmm.parquet")
    down = pd.read_parquet(wd / "results/fits/down/lmm.parquet")
    np.testing.assert_array_equal(up["cate"], down["cate"])
    assert (up["decision"] == (up["cate"] > 0)).all() and (down["decision"] == (down["cate"] < 0)).all()
