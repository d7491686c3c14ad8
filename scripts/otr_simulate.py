"""Simulate the chunks of replicates of the cells of one OTR design (one output file per cell x
chunk, in the order of ``params.cells``/``params.chunks``)."""
from clusterhte import io, smk
from clusterhte.stages import otr
from clusterhte.stages.fitting import chunk_provenance, keep_freed_memory, limit_threads

limit_threads(snakemake.threads)
keep_freed_memory()

with smk.logged(snakemake):
    p, w = snakemake.params, snakemake.wildcards
    cfg = {"replicates": p.replicates, "reps_per_chunk": p.reps_per_chunk, "wildcards": dict(w.items())}
    prov = chunk_provenance(rule=snakemake.rule, config=cfg, seed=p.seed)
    for cell, k, dst in zip(p.cells, p.chunks, snakemake.output):
        table = otr.simulate_table(cell, int(k), p.replicates, p.reps_per_chunk, p.seed)
        io.write_table(table, dst, prov=prov([], cell=cell, chunk=int(k)), parquet=otr.SIM_PARQUET)
