"""Simulate the chunks of replicates of one OTR design cell (one output file per chunk)."""
from clusterhte import io, smk
from clusterhte.stages import otr
from clusterhte.stages.fitting import chunk_provenance, limit_threads

limit_threads(snakemake.threads)

with smk.logged(snakemake):
    p, w = snakemake.params, snakemake.wildcards
    cfg = {"replicates": p.replicates, "reps_per_chunk": p.reps_per_chunk, "wildcards": dict(w.items())}
    prov = chunk_provenance(rule=snakemake.rule, config=cfg, seed=p.seed)
    for k, dst in zip(p.chunks, snakemake.output):
        df = otr.simulate(w.cell, int(k), p.replicates, p.reps_per_chunk, p.seed)
        io.write_parquet(df, dst, prov=prov([], chunk=int(k)))
