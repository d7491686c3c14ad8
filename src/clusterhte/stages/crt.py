"""Stages of the CRT-CATE simulation study: simulate, fit, evaluate, aggregate.

Each function takes and returns plain DataFrames so the workflow scripts stay thin and the stages
can be run (and tested) without Snakemake.
"""

from __future__ import annotations

import sys

import pandas as pd

from clusterhte.evaluate import crt_metrics
from clusterhte.simulate import crt_designs
from clusterhte.stages.fitting import chunk_reps, fit_replicates, iter_by_rep


def cells(cfg: dict) -> list[str]:
    """Names of the design cells of the ``crt`` config section.

    The product of the factor lists, plus (``size_sensitivity: true``) the fixed-size-20 copies of
    the linear-f0 cells: the 36-cell design of spec section 4.1 with the paper's lists.
    """
    main = crt_designs.grid(M=[int(m) for m in cfg["clusters"]], size=cfg["cluster_sizes"],
                            icc=[float(i) for i in cfg["iccs"]], f0=cfg["f0"], tau=cfg["tau"])
    extra = []
    if cfg.get("size_sensitivity", False):
        extra = [crt_designs.CrtCell(M=c.M, size=crt_designs.SENSITIVITY_SIZE, icc=c.icc, f0=c.f0, tau=c.tau)
                 for c in main if c.f0 == "lin"]
    return list(dict.fromkeys(c.name for c in main + extra))


def simulate(cell: str, k: int, replicates: int, reps_per_chunk: int, seed: int,
             n_test_clusters: int = 50, test_cluster_size: int = 20) -> pd.DataFrame:
    c = crt_designs.CrtCell.from_name(cell)
    return crt_designs.simulate_chunk(c, seed, chunk_reps(replicates, reps_per_chunk, k),
                                      n_test_clusters=n_test_clusters, test_cluster_size=test_cluster_size)


def fit(sim: pd.DataFrame, cell: str, method: str, params: dict, seed: int, log=sys.stderr,
        threads: int = 1) -> pd.DataFrame:
    """Fit ``method`` on the training clusters of each replicate; CATEs for train and new clusters."""
    reps = []
    for rep, g in iter_by_rep(sim):
        train = crt_designs.trial_from_replicate(g, "train")
        reps.append((rep, train, {"train": train, "test": crt_designs.trial_from_replicate(g, "test")}))
    return fit_replicates(reps, study="crt", cell=cell, method=method, params=params, root_seed=seed,
                          log=log, total=len(reps), threads=threads)


def evaluate(sim: pd.DataFrame, fits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per-replicate metrics of every method's fits of one chunk (long: rep, method, metric, value)."""
    return pd.concat([crt_metrics.replicate_metrics(f, sim, method=m) for m, f in fits.items()],
                     ignore_index=True)


def collect(metric_tables: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """Stack per-cell metric chunks (cell name -> chunk tables), adding the design factors."""
    parts = []
    for cell, chunks in metric_tables.items():
        c = crt_designs.CrtCell.from_name(cell)
        parts.extend(t.assign(cell=cell, M=c.M, size=str(c.size), icc=c.icc, f0=c.f0, tau=c.tau)
                     for t in chunks)
    return pd.concat(parts, ignore_index=True)


def summary(per_rep: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD, MCSE, replicate and failure counts per cell x method x metric."""
    out = crt_metrics.aggregate(per_rep)
    return out.sort_values(["cell", "metric", "method"]).reset_index(drop=True)


def tables(per_rep: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The aggregate stage's tables (output name -> table)."""
    return {"summary": summary(per_rep)}
