"""Metrics of every CRT method on one chunk (PEHE in/out of sample, bias, coverage, width, ...)."""
from clusterhte import io, smk
from clusterhte.stages import crt

with smk.logged(snakemake):
    p = snakemake.params
    sim = io.read_parquet(snakemake.input.sim)
    fits = {m: io.read_parquet(f) for m, f in zip(p.methods, snakemake.input.fits)}
    io.write_parquet(crt.evaluate(sim, fits), snakemake.output[0], prov=smk.prov(snakemake))
