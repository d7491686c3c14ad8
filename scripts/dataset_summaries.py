"""Summary tables of one analysed trial (every method's CATEs), Parquet + CSV."""
from clusterhte import io, smk
from clusterhte.stages import apply

with smk.logged(snakemake):
    p, w = snakemake.params, snakemake.wildcards
    trial = io.read_trial(snakemake.input.data)
    fits = {m: io.read_parquet(f) for m, f in zip(p.methods, snakemake.input.fits)}
    ppc = {m: io.read_parquet(f) for m, f in zip(p.methods, snakemake.input.ppc)}
    draws = {m: apply.draws_array(io.read_parquet(f)) for m, f in zip(p.methods, snakemake.input.draws)}
    tables = apply.summarise(trial, fits, larger_is_better=p.larger_is_better,
                             subgroups=apply.subgroups_for(w.dataset), reference=p.reference, ppc=ppc,
                             draws=draws)
    pr = smk.prov(snakemake, {"larger_is_better": p.larger_is_better, "reference": p.reference})
    for name, path in zip(p.tables, snakemake.output):
        io.write_parquet(tables[name], path, prov=pr, csv=True)
