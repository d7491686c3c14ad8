"""Metrics of every OTR method on one chunk (accuracy, F1, rank correlation, AUC, congruence)."""
from clusterhte import io, smk
from clusterhte.stages import otr

with smk.logged(snakemake):
    p = snakemake.params
    sim = io.read_parquet(snakemake.input.sim)
    fits = {m: io.read_parquet(f) for m, f in zip(p.methods, snakemake.input.fits)}
    out = otr.evaluate(sim, fits, rank=p.rank)
    io.write_parquet(out, snakemake.output[0], prov=smk.prov(snakemake, {"rank_correlation": p.rank}))
