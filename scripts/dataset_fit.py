"""Fit one method on a whole trial (TASSH, CCT or a user's trial); CATEs for every row."""
from clusterhte import smk

smk.limit_threads(snakemake.threads)
from clusterhte import io  # noqa: E402
from clusterhte.stages import apply  # noqa: E402

with smk.logged(snakemake) as log:
    p, w = snakemake.params, snakemake.wildcards
    trial = io.read_trial(snakemake.input[0])
    fits, ppc, draws = apply.fit(trial, w.method, dict(p.hyper), p.seed, larger_is_better=p.larger_is_better,
                          log=log, threads=snakemake.threads)
    pr = smk.prov(snakemake, {"method": w.method, "hyperparameters": dict(p.hyper)}, seed=p.seed)
    io.write_parquet(fits, snakemake.output.fits, prov=pr)
    io.write_parquet(ppc, snakemake.output.ppc, prov=pr)
    io.write_parquet(draws, snakemake.output.draws, prov=pr)
