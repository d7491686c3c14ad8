"""Fit one OTR method on the chunks of simulated replicates of one design (one compact fit table
per cell x chunk: scores and decisions on the test split). Inputs and outputs pair up chunk by
chunk, in the order of ``params.cells``."""
from clusterhte import smk

smk.limit_threads(snakemake.threads)
from clusterhte import io  # noqa: E402
from clusterhte.stages import otr  # noqa: E402
from clusterhte.stages.fitting import chunk_provenance, keep_freed_memory, limit_threads  # noqa: E402

limit_threads(snakemake.threads)  # numpy is loaded by now: limit its pools too
keep_freed_memory()

with smk.logged(snakemake) as log:
    p, w = snakemake.params, snakemake.wildcards
    cfg = {"method": w.method, "hyperparameters": dict(p.hyper), "wildcards": dict(w.items())}
    prov = chunk_provenance(rule=snakemake.rule, config=cfg, seed=p.seed, record_sha256=True)
    for cell, src, dst in zip(p.cells, snakemake.input, snakemake.output):
        table = otr.fit_table(otr.read_sim(src), cell, w.method, dict(p.hyper), p.seed, log=log,
                              threads=snakemake.threads)
        io.write_table(table, dst, prov=prov([src], output=str(dst)), parquet=otr.FIT_PARQUET)
