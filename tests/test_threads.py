"""Threads are honoured: the rule's thread count reaches estimators that take one, never the
hyperparameters that trigger reruns, and BLAS/OpenMP pools are limited to it."""

import os

from clusterhte import methods, smk
from clusterhte.stages.fitting import with_threads


def test_rule_threads_reach_the_estimators_that_take_them():
    takes = [m for m in methods.REGISTRY if "n_threads" in methods.get(m).param_names()]
    assert {"ribart", "mbcf", "cf", "merf", "megb", "gpboost"} <= set(takes)
    for m in methods.REGISTRY:
        p = with_threads(m, {}, 4)
        assert p == ({"n_threads": 4} if m in takes else {})
        assert methods.make(m, p).get_params().get("n_threads", 4) == 4
    assert with_threads("gpboost", {"n_threads": 2}, 4) == {"n_threads": 2}  # an explicit value wins


def test_limit_threads_sets_every_pool(monkeypatch):
    for v in smk.THREAD_VARIABLES:
        monkeypatch.setenv(v, "16")
    smk.limit_threads(3)
    assert all(os.environ[v] == "3" for v in smk.THREAD_VARIABLES)


def test_limit_threads_reaches_blas_loaded_before_it():
    """numpy (and OpenBLAS) is already loaded when a workflow script runs; the limit must still
    reach the loaded pools, not only the environment."""
    import numpy  # noqa: F401  - loaded before the limit, as in a workflow script
    from threadpoolctl import threadpool_info

    from clusterhte.stages.fitting import limit_threads

    ctl = limit_threads(1)
    try:
        pools = threadpool_info()
        assert pools and all(p["num_threads"] == 1 for p in pools), pools
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    finally:
        ctl.restore_original_limits()


def test_otr_scripts_limit_threads():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "scripts"
    for name in ("sim_fit.py", "otr_fit.py", "otr_simulate.py", "otr_evaluate.py"):
        assert "limit_threads(snakemake.threads)" in (root / name).read_text(), name
