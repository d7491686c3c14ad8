"""Simulate one chunk of replicates of one OTR design cell."""
from clusterhte import io, smk
from clusterhte.stages import otr

with smk.logged(snakemake):
    p, w = snakemake.params, snakemake.wildcards
    df = otr.simulate(w.cell, int(w.k), p.replicates, p.reps_per_chunk, p.seed)
    cfg = {"replicates": p.replicates, "reps_per_chunk": p.reps_per_chunk}
    io.write_parquet(df, snakemake.output[0], prov=smk.prov(snakemake, cfg, seed=p.seed))
