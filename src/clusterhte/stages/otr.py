"""Stages of the multisite-OTR simulation study: simulate, fit, evaluate, aggregate."""

from __future__ import annotations

import sys

import pandas as pd

from clusterhte.evaluate import otr_metrics
from clusterhte.simulate import otr_designs
from clusterhte.stages.fitting import chunk_reps, fit_replicates, iter_by_rep


def simulate(cell: str, k: int, replicates: int, reps_per_chunk: int, seed: int) -> pd.DataFrame:
    design, J, n = otr_designs.parse_cell(cell)
    return otr_designs.simulate_chunk(design, J, n, chunk_reps(replicates, reps_per_chunk, k), seed)


def fit(sim: pd.DataFrame, cell: str, method: str, params: dict, seed: int, log=sys.stderr,
        threads: int = 1) -> pd.DataFrame:
    reps = [(rep, otr_designs.trial_from_replicate(g, "train"),
             {"test": otr_designs.trial_from_replicate(g, "test")}) for rep, g in iter_by_rep(sim)]
    return fit_replicates(reps, study="otr", cell=cell, method=method, params=params, root_seed=seed,
                          log=log, total=len(reps), threads=threads)


def evaluate(sim: pd.DataFrame, fits: dict[str, pd.DataFrame], rank: str = "spearman") -> pd.DataFrame:
    """Metrics of every method's fits of one chunk; ``fits`` maps method name -> fit table."""
    allf = pd.concat([f.assign(method=m) for m, f in fits.items()], ignore_index=True)
    return otr_metrics.evaluate_chunk(allf, sim, rank=rank)


def collect(metric_tables: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """Stack per-cell metric chunks (cell name -> chunk tables) adding design, J, n columns."""
    parts = []
    for cell, chunks in metric_tables.items():
        d, J, n = otr_designs.parse_cell(cell)
        parts.extend(t.assign(cell=cell, design=d, J=J, n=n) for t in chunks)
    return pd.concat(parts, ignore_index=True)


def summary(per_rep: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD and MCSE over replicates per design x size x method (congruence left out)."""
    m = per_rep[per_rep["metric"] != "congruence"]
    out = otr_metrics.aggregate(m, ["design", "J", "n"]).drop(columns="other")
    return out.sort_values(["design", "J", "n", "metric", "method"]).reset_index(drop=True)


def congruence(per_rep: pd.DataFrame) -> pd.DataFrame:
    """Mean pairwise congruence per design x size (long: method, other, mean)."""
    m = per_rep[per_rep["metric"] == "congruence"]
    return otr_metrics.aggregate(m, ["design", "J", "n"])


def congruence_matrix(cong: pd.DataFrame, design: str, J: int, n: int, methods: list[str]) -> pd.DataFrame:
    """Mean congruence matrix (methods x methods, in ``methods`` order) of one design and size."""
    c = cong[(cong["design"] == design) & (cong["J"] == J) & (cong["n"] == n)]
    if c.empty:
        raise ValueError(f"no congruence results for design {design} at (J, n) = ({J}, {n})")
    m = c.pivot(index="method", columns="other", values="mean")
    present = [x for x in methods if x in m.index]
    return m.loc[present, present]


def tables(per_rep: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The aggregate stage's tables (output name -> table)."""
    return {"summary": summary(per_rep), "congruence": congruence(per_rep)}
