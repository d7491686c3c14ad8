"""Issue 12, item 17: rerunning a stage writes byte-identical files, so auditors can compare runs by
sha256. The provenance time comes from SOURCE_DATE_EPOCH when set; `make run` sets it (commit time)."""

import hashlib
import subprocess
import sys
import time

import pandas as pd
import pytest

from clusterhte import io
from workflow_utils import workdir

SHEET = ("name\tpath\tdesign\toutcome\ttreatment\tcluster\tindividual_covariates\tcluster_covariates\t"
         "moderators\tmethods\n"
         "example_crt\ttests/data/example_crt.csv\tcrt\ty\tarm\tsite\tage,female,score\turban\t\tlmm\n")


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_same_data_same_bytes_with_source_date_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    df = pd.DataFrame({"a": [1.0, 2.0]})
    (tmp_path / "in.csv").write_text("a\n1\n")
    for name in ("one", "two"):
        io.write_parquet(df, tmp_path / f"{name}.parquet",
                         prov=io.provenance(rule="r", inputs=[tmp_path / "in.csv"], config={"k": 1}))
        time.sleep(1.1)
    assert sha(tmp_path / "one.parquet") == sha(tmp_path / "two.parquet")
    assert io.read_provenance(tmp_path / "one.parquet")["created_utc"] == "2023-11-14T22:13:20+00:00"


def test_malformed_source_date_epoch_refused(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH"):
        io.provenance(rule="r")


def test_make_run_reruns_a_stage_byte_identically(tmp_path):
    wd = workdir(tmp_path / "wd", {"seed": 5, "reps_per_chunk": 1,
                                   "trials": {"sheet": "config/one.tsv", "method_overrides": {}}})
    (wd / "config" / "one.tsv").write_text(SHEET)
    target = "results/data/example_crt.parquet"
    run = [sys.executable, "-m", "clusterhte.smk", "run", "--cores", "1", "--configfile=run.yaml", target]
    env = {k: v for k, v in __import__("os").environ.items() if k != "SOURCE_DATE_EPOCH"}
    r = subprocess.run(run, cwd=wd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    first = sha(wd / target)
    time.sleep(1.1)
    r = subprocess.run(run + ["--forcerun", "trial_clean"], cwd=wd, capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trial_clean" in r.stdout + r.stderr  # it did run again
    assert sha(wd / target) == first
