"""Issue 12, items 14 and 15, and the README's trial-sheet statements: `larger_is_better` is
documented (README table, schema) and `false` reverses every decision (sheet: tests/test_offline.py);
the README's config with only a `trials` section builds only the user's trials."""

import re

import numpy as np
import yaml

from clusterhte import config as chconfig
from clusterhte import io
from conftest import ROOT
from workflow_utils import planned_jobs, snakemake, workdir

README = (ROOT / "README.md").read_text()


def test_larger_is_better_documented():
    table = [l for l in README.splitlines() if l.startswith("| `larger_is_better`")]
    assert table and "`false`" in table[0] and "below 0" in table[0]
    schema = chconfig.load_yaml(ROOT / "workflow/schemas/trials.schema.yaml")
    assert "below 0" in schema["properties"]["larger_is_better"]["description"]


def test_cli_smaller_is_better_reverses_decisions(tmp_path):
    """--smaller-is-better is the sheet's larger_is_better: false (tests/test_offline.py checks the sheet)."""
    from clusterhte import cli
    args = ["fit", "--data", str(ROOT / "tests/data/example_crt.csv"), "--design", "crt", "--outcome", "y",
            "--treatment", "arm", "--cluster", "site", "--covariates", "age,female,score",
            "--cluster-covariates", "urban", "--method", "lmm"]
    assert cli.main(args + ["--out", str(tmp_path / "up.parquet")]) == 0
    assert cli.main(args + ["--smaller-is-better", "--out", str(tmp_path / "down.parquet")]) == 0
    up, down = (io.read_parquet(tmp_path / f"{n}.parquet") for n in ("up", "down"))
    np.testing.assert_array_equal(up["cate"], down["cate"])
    assert (up["decision"] == (up["cate"] > 0)).all() and (down["decision"] == (down["cate"] < 0)).all()


def test_readme_config_with_only_trials_builds_only_them(tmp_path):
    sec = README[README.index("**Only your own trials**"):]
    block = re.search(r"```yaml\n(.*?)```", sec, re.S).group(1)
    cfg = yaml.safe_load(block)
    assert set(cfg) == {"seed", "reps_per_chunk", "trials"}
    wd = workdir(tmp_path / "wd")
    (wd / "config" / "mine.yaml").write_text(block)
    assert "make run CONFIG=config/mine.yaml" in sec
    r = snakemake(wd, "-n", "--configfile", "config/mine.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = planned_jobs(r.stdout)
    assert jobs.get("trial_clean") == 1 and jobs.get("dataset_fit") == 4  # example_crt: 4 methods
    assert not [rule for rule in jobs if rule.split("_")[0] in ("otr", "crt", "tassh", "cct")], jobs
