"""Fit one method on one chunk of simulated replicates of a study (otr: scores on the test split;
crt: CATEs on the training and the new clusters)."""
from clusterhte import smk

smk.limit_threads(snakemake.threads)
from clusterhte import io, stages  # noqa: E402

with smk.logged(snakemake) as log:
    p, w = snakemake.params, snakemake.wildcards
    sim = io.read_parquet(snakemake.input[0])
    fits = stages.study(p.study).fit(sim, w.cell, w.method, dict(p.hyper), p.seed, log=log,
                                     threads=snakemake.threads)
    io.write_parquet(fits, snakemake.output[0],
                     prov=smk.prov(snakemake, {"method": w.method, "hyperparameters": dict(p.hyper)}, seed=p.seed))
