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
    for src, dst in zip(snakemake.input, snakemake.output):
        fits = study.fit(read(src), w.cell, w.method, dict(p.hyper), p.seed, log=log,
                         threads=snakemake.threads)
        io.write_parquet(fits, dst, prov=prov([src], output=str(dst)))
