"""Metrics of every OTR method on each chunk of one cell (accuracy, F1, rank correlation, AUC,
congruence): one metrics file per chunk."""
from clusterhte import smk
from clusterhte.stages import otr
from clusterhte import io
from clusterhte.stages.fitting import chunk_provenance, keep_freed_memory, limit_threads

limit_threads(snakemake.threads)
keep_freed_memory()

with smk.logged(snakemake):
    p = snakemake.params
    prov = chunk_provenance(rule=snakemake.rule, config={"rank_correlation": p.rank,
                                                          "wildcards": dict(snakemake.wildcards.items())})
    nm = len(p.methods)
    for i, (sim_path, dst) in enumerate(zip(snakemake.input.sim, snakemake.output)):
        fit_paths = snakemake.input.fits[i * nm:(i + 1) * nm]
        sim = otr.read_truth(sim_path)
        fits = {m: otr.read_fit(f) for m, f in zip(p.methods, fit_paths)}
        out = otr.evaluate(sim, fits, rank=p.rank)
        io.write_parquet(out, dst, prov=prov([sim_path, *fit_paths]))
