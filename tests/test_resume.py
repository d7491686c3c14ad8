"""Kill and resume, and determinism, of the quick OTR workflow (on a reduced config).

SIGKILL to the whole `make run` process group while fit jobs run, then `make run` again (the
README's resume promise: the same command, nothing else):
- no truncated Parquet file is ever left under a finished name;
- jobs finished before the kill are not rerun;
- every Parquet file holds the same data as in an uninterrupted run from scratch (provenance time
  and the wall-clock ``seconds`` measurements aside). Each job of the killed run also ran from
  scratch, so this is also the check that two runs write identical data.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from workflow_utils import make_run, make_run_cmd, snakemake, workdir

CFG = {
    "seed": 11, "reps_per_chunk": 2,
    "otr": {"designs": ["d1", "d3"], "sizes": [[8, 10]], "replicates": 4,
            "methods": ["q-base", "q-ri", "q-rs", "w-aug", "ws-noaug"],
            "congruence_size": [8, 10], "method_overrides": {}},
}
TARGET = "results/tables/otr_summary.csv"
TIMING = {"seconds"}


def data_of(path: Path) -> pd.DataFrame:
    df = pq.read_table(path).to_pandas()
    if "metric" in df.columns:
        df = df[df["metric"] != "seconds"]
    return df.drop(columns=[c for c in df.columns if c in TIMING]).reset_index(drop=True)


def incomplete_outputs(wd: Path) -> set[str]:
    """Outputs Snakemake has marked incomplete (.snakemake/incomplete: base64 of the path): jobs
    that had started and not been recorded as finished when the run stopped."""
    import base64

    inc = wd / ".snakemake" / "incomplete"
    out = set()
    for root, _, files in os.walk(inc):
        for f in files:
            parts = Path(root, f).relative_to(inc).parts
            if parts[-1] == "migration_underway":
                continue
            out.add(base64.urlsafe_b64decode("".join(p.lstrip("@") for p in parts)).decode())
    return out


def parquet_files(wd: Path) -> dict[str, Path]:
    return {str(p.relative_to(wd)): p for p in (wd / "results").rglob("*.parquet")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    wd = workdir(tmp_path_factory.mktemp("ref"), CFG)
    r = snakemake(wd, TARGET)
    assert r.returncode == 0, r.stderr[-3000:]
    return wd


def test_kill_and_resume(reference, tmp_path):
    """kill -9 of the whole `make run` process group, then `make run` again (no --unlock, no
    --rerun-incomplete by hand): it completes, and nothing that had finished runs again."""
    wd = workdir(tmp_path, CFG)
    proc = subprocess.Popen(make_run_cmd(wd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    fits = wd / "results" / "fits"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if fits.exists() and len(list(fits.rglob("*.parquet"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the workflow finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    running = incomplete_outputs(wd)
    before = {k: p.stat().st_mtime_ns for k, p in parquet_files(wd).items() if k not in running}
    assert before, "nothing was finished before the kill"
    for k, p in parquet_files(wd).items():  # (a) every finished-looking file is a whole Parquet file
        pq.read_table(p)
    assert not (wd / TARGET).exists()
    assert list((wd / ".snakemake" / "locks").iterdir()), "the kill left no lock to recover from"
    r = make_run(wd)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (wd / TARGET).exists()
    after = parquet_files(wd)
    for k, t in before.items():  # (b) jobs finished before the kill did not run again
        assert after[k].stat().st_mtime_ns == t, f"{k} was rewritten"
    rerun = [l for l in r.stderr.splitlines() if l.strip().startswith("output: results/")]
    assert len(rerun) < len(after), "everything ran again"
    ref = parquet_files(reference)  # (c) the same data in every file as an uninterrupted run
    assert ref.keys() == after.keys() and len(ref) > 10
    for k in ref:
        pd.testing.assert_frame_equal(data_of(ref[k]), data_of(after[k]), obj=k)
