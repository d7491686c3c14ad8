"""End-to-end OTR workflow on a tiny config: outputs, nothing-to-do after a run, and a changed
hyperparameter of one method reruns only that method's fit jobs and what depends on them."""

import pandas as pd
import pytest
import yaml

from clusterhte import io
from workflow_utils import ROOT, planned_jobs, snakemake, workdir

TINY = {
    "seed": 5, "reps_per_chunk": 2,
    "otr": {"designs": ["d1", "d2"], "sizes": [[6, 12]], "replicates": 3,
            "methods": ["q-base", "q-fe", "q-rs", "w-noaug", "ws-augid"],
            "congruence_size": [6, 12], "method_overrides": {}},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    wd = workdir(tmp_path_factory.mktemp("wf"), TINY)
    r = snakemake(wd, "results/tables/otr_summary.csv", "results/figures/otr/accuracy_d1.png",
                  "results/figures/otr/congruence_d2.pdf")
    assert r.returncode == 0, r.stderr[-4000:]
    return wd


def test_outputs(finished):
    s = pd.read_csv(finished / "results/tables/otr_summary.csv")
    assert set(s.method) == set(TINY["otr"]["methods"])
    assert set(s.design) == {"d1", "d2"}
    acc = s[s.metric == "accuracy"]
    assert (acc["n_reps"] == 3).all() and acc["mean"].between(0, 1).all()
    prov = io.read_provenance(finished / "results/tables/otr_summary.parquet")
    assert prov["rule"] == "otr_aggregate" and len(prov["inputs"]) == 4  # 2 cells x 2 chunks
    assert (finished / "results/figures/otr/accuracy_d1.png").stat().st_size > 10_000


def test_metrics_match_the_recorded_run(finished):
    """Every per-replicate metric (all but the timings) equals, to the last bit, the values of the
    same run recorded before the fit tables were built in Arrow and the jobs were grouped by
    design (tests/data/otr_tiny_metrics.csv, written with 17 significant digits)."""
    ref = pd.read_csv(ROOT / "tests/data/otr_tiny_metrics.csv", keep_default_na=False,
                      na_values={"value": ["", "NaN", "nan"]})
    got = pd.read_parquet(finished / "results/tables/otr_metrics.parquet")
    got = got[got["metric"] != "seconds"]
    keys = ["cell", "rep", "method", "metric", "other"]
    got = got.assign(other=got["other"].fillna("")).sort_values(keys).reset_index(drop=True)
    ref = ref.assign(other=ref["other"].fillna("").astype(str)).sort_values(keys).reset_index(drop=True)
    assert len(got) == len(ref) == 330
    for c in ["cell", "rep", "method", "metric", "other", "design", "J", "n"]:
        assert got[c].astype(str).tolist() == ref[c].astype(str).tolist(), c
    assert got["value"].to_numpy().tobytes() == ref["value"].to_numpy(dtype=float).tobytes()


def test_nothing_to_do_then_only_changed_method(finished):
    targets = ["results/tables/otr_summary.csv", "results/figures/otr/accuracy_d1.png",
               "results/figures/otr/congruence_d2.pdf"]
    r = snakemake(finished, "-n", *targets)
    assert r.returncode == 0
    assert planned_jobs(r.stdout) == {}, r.stdout
    m = yaml.safe_load((finished / "config/methods.yaml").read_text())
    m["w-noaug"] = dict(m.get("w-noaug") or {}, nfolds=4)
    (finished / "config/methods.yaml").write_text(yaml.safe_dump(m))
    r = snakemake(finished, "-n", *targets)
    jobs = planned_jobs(r.stdout)
    # one w-noaug fit job per design (each writes its one cell's 2 chunks), then the evaluation of
    # those 2 designs and what follows; no other method's fits, no simulation
    assert jobs.get("otr_fit") == 2, r.stdout
    assert jobs.get("otr_evaluate") == 2 and jobs.get("otr_aggregate") == 1
    assert "otr_simulate" not in jobs
    fit_lines = [l for l in r.stdout.splitlines() if "results/fits/otr/" in l and "output:" in l]
    assert len(fit_lines) == 2 and all("/w-noaug/" in l for l in fit_lines)
    assert all(l.count("/w-noaug/") == 2 and "chunk0" in l and "chunk1" in l for l in fit_lines)


def test_audit_chain_and_changed_input(finished):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).with_name("clusterhte"))
    r = subprocess.run([cli, "audit", "results/tables/otr_summary.parquet"], cwd=finished,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for rule in ("otr_aggregate", "otr_evaluate", "otr_fit", "otr_simulate"):
        assert f"rule {rule}" in r.stdout
    sim = finished / "results/sim/otr/d1_J6_n12/chunk0.parquet"
    backup = finished / "sim.bak"
    shutil.copy(sim, backup)
    try:
        df = io.read_parquet(sim)
        df.loc[0, "outcome"] += 1.0
        io.write_parquet(df, sim, prov=io.read_provenance(backup))
        r = subprocess.run([cli, "audit", "results/tables/otr_summary.parquet"], cwd=finished,
                           capture_output=True, text=True)
        assert r.returncode == 1
        assert "CHANGED: results/sim/otr/d1_J6_n12/chunk0.parquet" in r.stderr
    finally:
        shutil.copy(backup, sim)


def test_snakemake_report_shows_every_figure(finished):
    r = snakemake(finished)  # the remaining figures of rule all
    assert r.returncode == 0, r.stderr[-3000:]
    r = snakemake(finished, "--report", "results/report.html")
    assert r.returncode == 0, r.stderr[-3000:]
    html = (finished / "results/report.html").read_text()
    figures = sorted(p.name for p in (finished / "results/figures/otr").glob("*.png"))
    assert len(figures) == 6  # accuracy, metrics and congruence for designs d1 and d2
    for name in figures:
        assert name in html, name
    assert "Multisite OTR simulation" in html


CRT_TINY = {
    "seed": 5, "reps_per_chunk": 2,
    "crt": {"clusters": [10], "cluster_sizes": [8], "iccs": [0.2], "f0": ["lin"], "tau": ["hom", "lin"],
            "replicates": 2, "n_test_clusters": 6, "test_cluster_size": 8,
            "methods": ["lmm", "gamm", "merf"],
            "method_overrides": {"merf": {"n_estimators": 20, "max_iter": 3, "n_bootstrap": 3}}},
}


def test_crt_study_end_to_end(tmp_path):
    wd = workdir(tmp_path, CRT_TINY)
    r = snakemake(wd)
    assert r.returncode == 0, r.stderr[-4000:]
    s = pd.read_csv(wd / "results/tables/crt_summary.csv")
    assert set(s.method) == {"lmm", "gamm", "merf"} and s.cell.nunique() == 2
    pehe = s[s.metric == "pehe_out"]
    assert (pehe["n_reps"] == 2).all() and (pehe["mean"] > 0).all()
    assert (s[s.metric == "failed"]["mean"] == 0).all()
    for fig in ("pehe", "coverage", "width", "runtime_vs_pehe"):
        assert (wd / f"results/figures/crt/{fig}.pdf").stat().st_size > 1000
