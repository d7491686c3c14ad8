"""Fit one method on the chunks of simulated replicates of a study (otr: scores on the test split;
crt: CATEs on the training and the new clusters). Inputs and outputs pair up chunk by chunk."""
from clusterhte import smk

smk.limit_threads(snakemake.threads)
from clusterhte import io, stages  # noqa: E402
from clusterhte.stages.fitting import chunk_provenance, limit_threads  # noqa: E402

limit_threads(snakemake.threads)  # numpy is loaded by now: limit its pools too

with smk.logged(snakemake) as log:
    p, w = snakemake.params, snakemake.wildcards
    study = stages.study(p.study)
    read = getattr(study, "read_sim", io.read_parquet)
    cfg = {"method": w.method, "hyperparameters": dict(p.hyper), "wildcards": dict(w.items())}
    prov = chunk_provenance(rule=snakemake.rule, config=cfg, seed=p.seed)
    # OTR builds its fit tables in Arrow (fit_table); CRT as DataFrames (fit)
    fit, write = ((study.fit_table, io.write_table) if hasattr(study, "fit_table")
                  else (study.fit, io.write_parquet))
    # OTR jobs cover several cells (params.cells: the cell of each input file); CRT jobs one
    cells = list(p.cells) if hasattr(p, "cells") else [w.cell] * len(snakemake.input)
    for cell, src, dst in zip(cells, snakemake.input, snakemake.output):
        fits = fit(read(src), cell, w.method, dict(p.hyper), p.seed, log=log, threads=snakemake.threads)
        write(fits, dst, prov=prov([src], output=str(dst)))
