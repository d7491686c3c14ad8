"""Simulate one chunk of replicates of one CRT design cell."""
from clusterhte import io, smk
from clusterhte.stages import crt

with smk.logged(snakemake):
    p, w = snakemake.params, snakemake.wildcards
    df = crt.simulate(w.cell, int(w.k), p.replicates, p.reps_per_chunk, p.seed,
                      n_test_clusters=p.n_test_clusters, test_cluster_size=p.test_cluster_size)
    cfg = {"replicates": p.replicates, "reps_per_chunk": p.reps_per_chunk,
           "n_test_clusters": p.n_test_clusters, "test_cluster_size": p.test_cluster_size}
    io.write_parquet(df, snakemake.output[0], prov=smk.prov(snakemake, cfg, seed=p.seed))
