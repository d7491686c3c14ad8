"""A bad configuration stops the workflow before any job runs, with one message naming the key."""

import copy

import pytest
import yaml

from clusterhte import config as chconfig
from workflow_utils import ROOT, snakemake, workdir

GOOD = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
METHODS = yaml.safe_load((ROOT / "config" / "methods.yaml").read_text())


def bad(path, value):
    cfg = copy.deepcopy(GOOD)
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return cfg


@pytest.mark.parametrize("path,value,key", [
    (["otr", "methods"], ["q-base", "q-nope"], "otr.methods[1]"),
    (["otr", "replicates"], 0, "otr.replicates"),
    (["otr", "replicates"], -5, "otr.replicates"),
    (["otr", "designs"], ["d1", "d7"], "otr.designs[1]"),
    (["reps_per_chunk"], 0, "reps_per_chunk"),
    (["otr", "sizes"], [[25]], "otr.sizes[0]"),
    (["otr", "rank_correlation"], "pearson", "otr.rank_correlation"),
    (["validation"], {"folds": 1}, "validation.folds"),
    (["validation"], {"boot": "many"}, "validation.boot"),
    (["validation"], {"fold": 5}, "validation"),
])
def test_bad_config_names_key(path, value, key):
    with pytest.raises(chconfig.ConfigError) as e:
        chconfig.validate(bad(path, value), METHODS)
    assert f"'{key}'" in str(e.value)


def test_good_configs_validate():
    chconfig.validate(GOOD, METHODS)
    chconfig.validate(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()), METHODS)


def test_bad_hyperparameter_type():
    m = dict(METHODS, **{"w-aug": {"nfolds": "five"}})
    with pytest.raises(chconfig.ConfigError, match="w-aug.*nfolds.*number"):
        chconfig.validate(GOOD, m)


def test_unknown_method_in_methods_yaml():
    with pytest.raises(chconfig.ConfigError, match="methods.yaml key 'q-magic'"):
        chconfig.validate(GOOD, dict(METHODS, **{"q-magic": {}}))


def test_workflow_stops_before_any_job(tmp_path):
    wd = workdir(tmp_path, bad(["otr", "designs"], ["d1", "d9"]))
    r = snakemake(wd, "-n")
    assert r.returncode != 0
    msg = r.stdout + r.stderr
    assert "invalid configuration" in msg and "'otr.designs[1]'" in msg
    assert not (wd / "results").exists()


def test_validation_does_not_import_the_iri_format_checker():
    """jsonschema's optional rfc3987_syntax builds 38 lark grammars on import (about 1.7 s of every
    workflow start); validation skips it, and the module stays importable afterwards."""
    import subprocess
    import sys

    code = ("import sys, yaml; from clusterhte import config as c; "
            f"c.validate(yaml.safe_load(open({str(ROOT / 'config' / 'config.yaml')!r})), "
            f"yaml.safe_load(open({str(ROOT / 'config' / 'methods.yaml')!r}))); "
            "assert 'jsonschema' in sys.modules and 'lark' not in sys.modules, 'lark imported'; "
            "import importlib.util; assert importlib.util.find_spec('rfc3987_syntax') is not None")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
