"""The paper-scale DAG (config/paper.yaml, dry run) builds and has fewer than 10,000 jobs, so a
cluster scheduler and Snakemake's own bookkeeping stay responsive. (How long the DAG takes to build
is not a test: the timeout only stops a hung run.)"""

import subprocess

from workflow_utils import SNAKEMAKE, planned_jobs, workdir


def test_paper_dag_size(tmp_path):
    wd = workdir(tmp_path)
    r = subprocess.run([SNAKEMAKE, "-n", "--configfile=config/paper.yaml", "--quiet", "rules"], cwd=wd,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = planned_jobs(r.stdout + r.stderr)
    total = sum(jobs.values())
    print(f"paper-scale DAG: {total} jobs: {jobs}")
    assert 1000 < total < 10_000
    assert jobs["otr_fit"] == 4 * 14               # designs x methods (each job: 4 sizes x 10 chunks of 50)
    assert jobs["otr_simulate"] == jobs["otr_evaluate"] == 4     # one per design
    assert jobs["crt_fit"] == 36 * 11 * 8           # cells x methods x chunks of 25
