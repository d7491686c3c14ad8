"""Threads are honoured: the rule's thread count reaches estimators that take one, never the
hyperparameters that trigger reruns, and BLAS/OpenMP pools are limited to it."""

import os

import numpy as np
import pytest

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


# ------------------------------------------------------------------ refits and chains in parallel
# Each method's independent refits (bootstrap, half-samples, CV folds) or MCMC chains run
# n_threads at a time; every refit and chain keeps its own seed, so the estimates must be the same
# bit for bit at any thread count (tiny settings: a few seconds in all).

TINY = {
    "merf": dict(n_estimators=20, bootstrap_trees=10, n_bootstrap=3, max_iter=3),
    "megb": dict(n_estimators=30, n_bootstrap=3, max_iter=3),
    "gpboost": dict(max_rounds=30, learning_rate=0.2, n_bootstrap=3),
    "cf": dict(n_estimators=40, yhat_trees=20, yhat_folds=3, n_half_samples=4, half_sample_trees=10),
    "mermboost": dict(mstop_max=40, n_bootstrap=3),
    "ribart": dict(num_trees=10, num_burnin=5, num_mcmc=10, num_chains=3),
    "mixedbart": dict(num_trees=10, num_burnin=5, num_mcmc=10, num_chains=2),
    "stan4bart": dict(num_trees=10, num_burnin=5, num_mcmc=10, num_chains=2),
    "mbcf": dict(num_trees_control=10, num_trees_moderate=5, num_burnin=5, num_mcmc=10, num_chains=3),
}


@pytest.fixture(scope="module")
def tiny_crt():
    from conftest import make_crt

    return make_crt(3, M=12, size=10)[0]


@pytest.mark.parametrize("name", sorted(TINY))
def test_estimates_do_not_depend_on_the_thread_count(name, tiny_crt):
    res = [methods.make(name, {**TINY[name], "n_threads": k}, random_state=5).fit(tiny_crt).predict(tiny_crt)
           for k in (1, 2)]
    for r in res[1:]:
        for k in ("point", "lower", "upper"):
            np.testing.assert_array_equal(getattr(r, k), getattr(res[0], k), err_msg=f"{name} {k}")
    assert np.all(np.isfinite(res[0].lower)) and np.all(res[0].lower < res[0].upper)


def test_bart_chains_pooled_in_chain_order(tiny_crt):
    """With parallel chains, chain c's draws are those of chain c run alone (seeds by chain number)."""
    est = methods.make("ribart", {**TINY["ribart"], "n_threads": 2}, random_state=5).fit(tiny_crt)
    d = est.chain_ate_draws(tiny_crt)
    assert d.shape == (3, 10) and not np.array_equal(d[0], d[1])


def test_parallel_map_keeps_order_and_checks_budget():
    from clusterhte.methods.bootstrap import n_workers, ordered_draws, parallel_map

    assert parallel_map(lambda x: x * x, range(7), 3) == [x * x for x in range(7)]
    assert parallel_map(lambda x: x + 1, range(5), 2, processes=True) == [1, 2, 3, 4, 5]
    assert n_workers(4, 2) == 2 and n_workers(1, 9) == 1 and n_workers(-1) >= 1
    it = iter(range(100))
    draw = ordered_draws(lambda: next(it))
    out = draw.collect(parallel_map(lambda _: draw.run(lambda d: -d), range(20), 4))
    assert out == [-k for k in range(20)]


@pytest.mark.parametrize("value", [0, -2, 1.5, "2", True])
def test_mermboost_rejects_bad_n_threads(value):
    with pytest.raises(methods.MethodError, match="n_threads"):
        methods.make("mermboost", {"n_threads": value})


@pytest.mark.parametrize("name, params", [
    ("ribart", dict(num_trees=10, num_burnin=5, num_mcmc=10, num_chains=1)),
    ("mbcf", dict(num_trees_control=10, num_trees_moderate=5, num_burnin=5, num_mcmc=10, num_chains=1)),
    ("mbcf", dict(num_trees_control=10, num_trees_moderate=5, num_burnin=0, num_gfr=2, num_mcmc=5, num_chains=2)),
    ("megb", dict(n_estimators=30, n_bootstrap=0, max_iter=3)),
    ("merf", dict(n_estimators=20, n_bootstrap=0, max_iter=3)),
])
def test_one_chain_or_no_refits_same_for_every_thread_count(name, params, tiny_crt):
    """Where nothing runs in parallel the thread count reaches stochtree / LightGBM / the forest
    builder only where that does not change the estimates (stochtree: never; its threads changed
    the draws)."""
    a, b = (methods.make(name, {**params, "n_threads": k}, random_state=5).fit(tiny_crt).predict(tiny_crt)
            for k in (1, 2))
    np.testing.assert_array_equal(a.point, b.point)
    np.testing.assert_array_equal(a.lower, b.lower)


def test_bart_forests_of_parallel_chains_rerun_identically(tiny_crt):
    """Chains run in worker processes send back their treatment trees only; the whole forests
    (posterior predictive of the outcome) are re-run in the calling process with the same seeds."""
    a, b = (methods.make("mixedbart", {**TINY["mixedbart"], "n_threads": k}, random_state=5).fit(tiny_crt)
            for k in (1, 2))
    assert b.chains_[0]["forests"] is None and a.chains_[0]["forests"] is not None
    pa, pb = a.predict_outcome(tiny_crt), b.predict_outcome(tiny_crt)
    for k in ("marginal", "conditional", "replicates"):
        np.testing.assert_array_equal(getattr(pa, k), getattr(pb, k), err_msg=k)
    np.testing.assert_array_equal(a.cate_draws(tiny_crt), b.cate_draws(tiny_crt))
