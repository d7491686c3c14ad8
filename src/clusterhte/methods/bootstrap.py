"""Cluster bootstrap intervals for methods with no native uncertainty (MERF, MEGB, GPBoost,
mermboost).

Clusters are resampled with replacement *within arm* (so every bootstrap trial keeps the
allocation: in a CRT the number of treated clusters is fixed), a cluster drawn twice enters as two
distinct clusters, the method is refitted, and the test-set CATEs are collected. The interval is a
**normal (Wald-type) interval centred at the full-data estimate**: ``point +- q * SD``, with ``SD``
the standard deviation of the B bootstrap CATEs of the row (``ddof = 1``) and ``q`` the normal
quantile, or, with ``student_t=True``, the ``t_{B-1}`` quantile, which accounts for the SD being
estimated from only B refits. The ATE interval is built the same way from the per-replicate row
averages. :func:`percentile_interval` (the equal-tailed quantiles of the draws) is available but
not used by the estimators: with the few refits a CRT study can afford it is less stable, and a
biased learner's percentile interval need not contain its own full-data estimate.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from clusterhte.data.trial import TrialData
from clusterhte.folds import cluster_strata


def n_workers(n_threads: int, n_tasks: int | None = None) -> int:
    """Workers for ``n_tasks`` independent refits given a thread budget ``n_threads`` (``-1`` = every
    core this process may use), never more than the tasks."""
    n = int(n_threads)
    if n == -1:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, n)
    return n if n_tasks is None else max(1, min(n, int(n_tasks)))


_TASK: Callable | None = None      # the function a forked worker of :func:`parallel_map` calls


def _run_task(i: int):
    return _TASK(i)


def parallel_map(fn: Callable, items: Sequence, n_threads: int, processes: bool = False) -> list:
    """``[fn(x) for x in items]``, computed by up to ``n_threads`` workers, results in input order.

    Used for independent refits (bootstrap, half-sample, MCMC chains) that each carry their own
    seed, so the results do not depend on the number of workers. ``processes=False``: a thread pool,
    for work that spends its time in compiled code releasing the GIL (scikit-learn / econml tree
    builders, LightGBM, GPBoost). ``processes=True``: forked worker processes (POSIX ``fork``, so
    ``fn`` may be a closure and the data are shared copy-on-write, never pickled on the way in), for
    work that holds the GIL (stochtree's sampler, small numpy steps in Python loops); the results
    come back pickled. Falls back to threads where ``fork`` is unavailable. With one worker (or one
    item) everything runs in the calling thread.
    """
    items = list(items)
    workers = n_workers(n_threads, len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    if processes and "fork" in multiprocessing.get_all_start_methods():
        global _TASK
        previous, _TASK = _TASK, (lambda i: fn(items[i]))
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                return list(pool.map(_run_task, range(len(items))))
        finally:
            _TASK = previous
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


class ordered_draws:
    """Random draws handed out in the order of the sequential loop to refits running in parallel.

    ``draw()`` takes the next draw from the refit loop's generators (e.g. a bootstrap sample and a
    seed). ``run(work)`` takes the next draw under a lock, numbers it, and returns ``(number,
    work(draw))``; :meth:`collect` puts the results back in draw order. Refit ``k`` therefore sees
    the ``k``-th draw whichever worker runs it and in whatever order the workers finish, so the
    refits are those of the sequential loop; the draws themselves stay inside the refit (helpers
    counted by ``clusterhte fit``'s progress lines are still called once per refit).
    """

    def __init__(self, draw: Callable[[], object]):
        import threading

        self._draw, self._lock, self._next = draw, threading.Lock(), 0

    def run(self, work: Callable[[object], object]) -> tuple[int, object]:
        with self._lock:
            k, self._next = self._next, self._next + 1
            d = self._draw()
        return k, work(d)

    @staticmethod
    def collect(results: list[tuple[int, object]]) -> list:
        return [r for _, r in sorted(results, key=lambda kr: kr[0])]


def bootstrap_clusters(train: TrialData, rng: np.random.Generator) -> np.ndarray:
    """Cluster codes of one cluster-bootstrap sample: within each arm (cluster stratum of
    :func:`clusterhte.folds.cluster_strata`; multisite sites form one stratum) as many clusters as
    the arm has, drawn with replacement."""
    strata = cluster_strata(train.cluster_codes, train.treatment)
    return np.concatenate([rng.choice(np.flatnonzero(strata == s), size=np.sum(strata == s), replace=True)
                           for s in np.unique(strata)])


def sample_of_clusters(train: TrialData, picked: np.ndarray) -> TrialData:
    """The trial made of the clusters ``picked`` (codes, repeats allowed); each pick becomes a
    distinct cluster labelled 0..len(picked)-1."""
    codes = train.cluster_codes
    J = codes.max() + 1
    # rows of each picked cluster, vectorised: sort rows by cluster, then gather slices
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(J))
    sizes = np.bincount(codes, minlength=J)
    lens = sizes[picked]
    offs = np.repeat(starts[picked], lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))
    rows = order[offs]
    frame = train.frame.iloc[rows].reset_index(drop=True)
    frame["cluster"] = np.repeat(np.arange(len(picked)), lens)
    return replace(train, frame=frame)


def resample_clusters(train: TrialData, rng: np.random.Generator) -> TrialData:
    """One cluster-bootstrap sample: clusters drawn with replacement within each arm."""
    return sample_of_clusters(train, bootstrap_clusters(train, rng))


def bootstrap_draws(fit_predict: Callable[[TrialData], np.ndarray], train: TrialData, B: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(n_test, B) matrix of CATEs from ``fit_predict`` refitted on B cluster-bootstrap samples."""
    cols = [np.asarray(fit_predict(resample_clusters(train, rng)), dtype=float) for _ in range(B)]
    return np.column_stack(cols)


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed quantiles of the draws (rows x replicates), per row."""
    a = (1 - level) / 2
    lo, hi = np.quantile(draws, [a, 1 - a], axis=1)
    return lo, hi


def normal_interval(point: np.ndarray, draws: np.ndarray, level: float = 0.95,
                    student_t: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``point +- q * SD`` of the bootstrap draws (rows x replicates), per row; ``q`` is the normal
    quantile, or the ``t_{B-1}`` quantile with ``student_t=True``.

    Used for the cluster-bootstrap intervals of MERF, MEGB, GPBoost and mermboost: with the small
    numbers of refits a CRT study can afford (B = 5-200) the normal interval is steadier than
    percentiles, and it is centred at the full-data estimate, so it always contains it (a
    percentile interval of a biased learner's refits need not).
    """
    from scipy.stats import norm, t

    B = draws.shape[1]
    q = t.ppf(0.5 + level / 2, B - 1) if (student_t and B > 1) else norm.ppf(0.5 + level / 2)
    sd = np.std(draws, axis=1, ddof=1) if B > 1 else np.full(draws.shape[0], np.nan)
    return point - q * sd, point + q * sd


def bootstrap_result(point: np.ndarray, draws: np.ndarray | None, level: float = 0.95,
                     info: dict | None = None, student_t: bool = False):
    """CateResult with normal cluster-bootstrap intervals (``point +- q SD``) for the rows and for
    the ATE; ``student_t`` selects the ``t_{B-1}`` quantile (see :func:`normal_interval`)."""
    from clusterhte.methods.base import CateResult

    info = dict(info or {})
    if draws is None or np.size(draws) == 0:
        return CateResult(point=point, info=info)
    draws = np.asarray(draws, dtype=float)
    lo, hi = normal_interval(point, draws, level, student_t)
    ate_lo, ate_hi = normal_interval(np.array([point.mean()]), draws.mean(axis=0)[None, :], level, student_t)
    info.update(n_bootstrap=draws.shape[1],
                interval="cluster bootstrap (normal, t quantile)" if student_t else "cluster bootstrap (normal)",
                ate_interval=(float(ate_lo[0]), float(ate_hi[0])))
    return CateResult(point=point, lower=lo, upper=hi, draws=draws, info=info)


def monte_carlo_corrected_result(point: np.ndarray, draws: np.ndarray, half_diff: np.ndarray, scale: float,
                                 level: float = 0.95, info: dict | None = None):
    """CateResult with cluster-bootstrap intervals ``point +- t_{B-1} sqrt(V)`` whose refits are
    forests of fewer trees than the full-data fit, their Monte Carlo noise removed.

    ``draws`` (rows x B) are the refit CATEs, ``half_diff`` (rows x B) the differences of the same
    CATEs computed from the two halves of each refit's forest. For a forest of ``T`` trees
    ``E[(tau_s1 - tau_s2)^2] / 4`` is the Monte Carlo variance of ``tau_s`` (two independent halves
    of ``T / 2`` trees), so ``V = [Var_s(tau_s) - noise]_debiased + scale * noise`` with
    ``scale = T_refit / T_full`` adding back the full-data forest's own noise; the subtraction is
    kept positive by grf's objective-Bayes correction (:func:`clusterhte.methods.causal_forest.
    debiased_variance`, as the causal forest's half-sample refits). The ATE interval uses the row
    averages in the same way.
    """
    from scipy.stats import t as student_t

    from clusterhte.methods.base import CateResult
    from clusterhte.methods.causal_forest import debiased_variance

    draws, half_diff = np.asarray(draws, float), np.asarray(half_diff, float)
    B = draws.shape[1]
    q = float(student_t.ppf(0.5 + level / 2, B - 1))

    def variance(T, D):
        noise = np.mean(D * D, axis=-1) / 4
        return debiased_variance(T.var(axis=-1, ddof=1), noise, B) + scale * noise

    se = np.sqrt(variance(draws, half_diff))
    ate = float(point.mean())
    ate_se = float(np.sqrt(variance(draws.mean(axis=0), half_diff.mean(axis=0))))
    info = dict(info or {})
    info.update(n_bootstrap=B, se=se, ate_interval=(ate - q * ate_se, ate + q * ate_se),
                interval=f"cluster bootstrap (normal, t quantile), refit Monte Carlo noise removed")
    return CateResult(point=point, lower=point - q * se, upper=point + q * se, draws=draws, info=info)
