"""Clean the TASSH trial: one row per patient, outcome = 12-month minus baseline SBP."""
from clusterhte import io, smk
from clusterhte.data import tassh

with smk.logged(snakemake) as log:
    trial, exclusions = tassh.clean(tassh.read_raw(snakemake.input[0]))
    pr = smk.prov(snakemake)
    io.write_trial(trial, snakemake.output.data, prov=pr)
    io.write_parquet(exclusions, snakemake.output.exclusions, prov=pr, csv=True)
    print(exclusions.to_string(index=False), file=log)
