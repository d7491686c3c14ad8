"""The quick OTR study through a real SLURM (single node on localhost), ``make test-slurm``.

Starts munged, slurmctld and slurmd from a temporary slurm.conf, runs the study with
``--profile config/profiles/slurm``, checks that the jobs went through sbatch (job ids in the
executor's log and in SLURM's job-completion log), cancels one running job, reruns, checks that
only the missing jobs were resubmitted, and compares the summary with a local run.
"""

from __future__ import annotations

import re
import subprocess
import time

import pandas as pd
import pytest

from workflow_utils import ROOT, SNAKEMAKE, planned_jobs, snakemake, workdir

pytestmark = pytest.mark.slurm

CONFIG = {
    "seed": 11, "reps_per_chunk": 1,
    "otr": {"designs": ["d1"], "sizes": [[6, 12]], "replicates": 3,
            "methods": ["q-base", "q-fe", "q-rs", "w-noaug"], "congruence_size": [6, 12],
            "method_overrides": {}},
}
TARGET = "results/tables/otr_summary.csv"
JOBID = re.compile(r"SLURM jobid (\d+)")


def slurm_run(wd, env, *extra, background=False):
    cmd = [SNAKEMAKE, "--profile", str(ROOT / "config/profiles/slurm"), "--configfile=run.yaml",
           "--slurm-status-command", "squeue", "--seconds-between-status-checks", "2",
           "--group-components", "otr_fit=2", "--retries", "0", "--jobs", "4", *extra, TARGET]
    if background:
        return subprocess.Popen(cmd, cwd=wd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=900)


def test_quick_study_on_slurm(tmp_path):
    from slurm_local import LocalSlurm, SlurmUnavailable

    local = workdir(tmp_path / "local", CONFIG)
    r = snakemake(local, TARGET)
    assert r.returncode == 0, r.stderr[-3000:]

    cluster = LocalSlurm(tmp_path / "slurm")
    try:
        cluster.start()
    except SlurmUnavailable as e:
        pytest.skip(str(e))
    try:
        wd = workdir(tmp_path / "slurmrun", CONFIG)
        # first run: cancel one running job midway
        p = slurm_run(wd, cluster.env, background=True)
        cancelled = None
        t0 = time.time()
        while time.time() - t0 < 300 and p.poll() is None:
            running = [j for j in cluster.squeue() if j[1] == "RUNNING"]
            if running and len(cluster.completed_jobs()) >= 2:
                cancelled = running[0][0]
                cluster.scancel(cancelled)
                break
            time.sleep(0.5)
        out1, _ = p.communicate(timeout=600)
        assert cancelled is not None, "no running job seen to cancel\n" + out1[-3000:]
        ids1 = JOBID.findall(out1)
        print("first run SLURM job ids:", ids1, "cancelled:", cancelled)
        assert ids1 and cancelled in ids1
        assert p.returncode != 0, "the cancelled job should have failed the first run"

        # what is left to do, then the rerun submits exactly that
        dry = subprocess.run([SNAKEMAKE, "-n", "--configfile=run.yaml", "--rerun-incomplete",
                              "--group-components=otr_fit=2", TARGET], cwd=wd, env=cluster.env,
                             capture_output=True, text=True)
        left = planned_jobs(dry.stdout)
        assert left, dry.stdout
        total = subprocess.run([SNAKEMAKE, "-n", "--configfile=run.yaml", "--forceall", TARGET], cwd=wd,
                               capture_output=True, text=True)
        assert sum(left.values()) < sum(planned_jobs(total.stdout).values())
        r2 = slurm_run(wd, cluster.env)
        assert r2.returncode == 0, (r2.stdout + r2.stderr)[-4000:]
        out2 = r2.stdout + r2.stderr
        ids2 = JOBID.findall(out2)
        print("rerun SLURM job ids:", ids2)
        assert ids2 and not set(ids2) & set(ids1)
        ran2 = [l for l in out2.splitlines() if l.strip().startswith("rule ")]
        assert len(ran2) == sum(left.values()), out2[-3000:]

        # SLURM itself ran them: every job id is in the job-completion log
        done = {j["JobId"]: j["JobState"] for j in cluster.completed_jobs()}
        assert set(ids2) <= {k for k, v in done.items() if v == "COMPLETED"}
        assert done.get(cancelled) == "CANCELLED"

        a = pd.read_csv(local / TARGET)
        b = pd.read_csv(wd / TARGET)
        keep = [c for c in a.columns]
        a = a[a.metric != "seconds"].reset_index(drop=True)
        b = b[b.metric != "seconds"].reset_index(drop=True)
        pd.testing.assert_frame_equal(a[keep], b[keep])
    finally:
        cluster.stop()
