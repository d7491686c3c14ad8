"""Clean the Colombia CCT trial (or its synthetic stand-in): exclusions of the paper, recodes, roles."""
from clusterhte import io, smk
from clusterhte.data import cct

with smk.logged(snakemake) as log:
    p = snakemake.params
    frame, exclusions = cct.clean(cct.read_raw(snakemake.input[0]), reference_row_order=p.reference_row_order)
    trial = cct.to_trial(frame, name=p.name)
    pr = smk.prov(snakemake, {"reference_row_order": p.reference_row_order})
    io.write_trial(trial, snakemake.output.data, prov=pr)
    io.write_parquet(exclusions, snakemake.output.exclusions, prov=pr, csv=True)
    print(exclusions.to_string(index=False), file=log)
