"""Issue 12, items 14 and 15, and the README's trial-sheet statements: `larger_is_better` is
documented (README table, schema) and `false` reverses every decision; the README's config with
only a `trials` section builds only the user's trials."""

import re

import numpy as np
import yaml

from clusterhte import config as chconfig
from clusterhte import io
from conftest import ROOT
from workflow_utils import planned_jobs, snakemake, workdir

README = (ROOT / "README.md").read_text()
HEADER = "\t".join(chconfig.TRIAL_COLUMNS) + "\tlarger_is_better"
ROW = "\ttests/data/example_crt.csv\tcrt\ty\tarm\tsite\tage,female,score\turban\t\tlmm\t"


def test_larger_is_better_documented():
    table = [l for l in README.splitlines() if l.startswith("| `larger_is_better`")]
    assert table and "`false`" in table[0] and "below 0" in table[0]
    schema = chconfig.load_yaml(ROOT / "workflow/schemas/trials.schema.yaml")
    assert "below 0" in schema["properties"]["larger_is_better"]["description"]


def test_larger_is_better_false_reverses_decisions(tmp_path):
    wd = workdir(tmp_path / "wd", {"seed": 5, "reps_per_chunk": 1,
                                   "trials": {"sheet": "config/two.tsv", "method_overrides": {}}})
    (wd / "config" / "two.tsv").write_text(HEADER + "\nup" + ROW + "true\ndown" + ROW + "false\n")
    r = snakemake(wd, "results/fits/up/lmm.parquet", "results/fits/down/lmm.parquet")
    assert r.returncode == 0, r.stderr[-3000:]
    up, down = (io.read_parquet(wd / f"results/fits/{n}/lmm.parquet") for n in ("up", "down"))
    np.testing.assert_array_equal(up["cate"], down["cate"])
    assert (up["decision"] == (up["cate"] > 0)).all() and (down["decision"] == (down["cate"] < 0)).all()
    assert (up["decision"] != down["decision"]).all()


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
