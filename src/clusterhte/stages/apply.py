"""Stages of a trial analysed once (TASSH, CCT, a user's trial): fit each method on the whole trial
and predict for the same rows, then stack the methods' CATEs for the summaries and the report."""

from __future__ import annotations

import sys

import pandas as pd

from clusterhte.data.trial import TrialData
from clusterhte.stages.fitting import fit_replicates


def fit(trial: TrialData, method: str, params: dict, seed: int, *, larger_is_better: bool = True,
        log=sys.stderr, threads: int = 1) -> pd.DataFrame:
    """CATEs of ``method`` fitted on every row of ``trial`` (rows in the trial's order).

    Same columns as the simulation fits plus ``cluster``. The method's random stream depends on
    the root ``seed`` and the method only, so the workflow and ``clusterhte fit`` give identical
    CATEs for the same trial, method and seed. A failing fit raises: there is no study to go on with.
    """
    out = fit_replicates([(0, trial, {"all": trial})], study="apply", cell="all",
                         method=method, params=params, root_seed=seed,
                         larger_is_better=larger_is_better, log=log, total=1, threads=threads)
    if out["failed"].any():
        raise RuntimeError(f"method '{method}' failed on {trial.name or 'the trial'}: {out['error'].iloc[0]}")
    out = out.drop(columns=["rep", "split", "failed", "error"])
    out.insert(1, "cluster", trial.cluster.to_numpy())
    return out


def stack(fits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Long table of every method's CATEs: method, row, cluster, cate, lower, upper, decision, ..."""
    return pd.concat([f.assign(method=m) for m, f in fits.items()], ignore_index=True)[
        ["method"] + [c for c in next(iter(fits.values())).columns]]
