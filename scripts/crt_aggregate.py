"""Stack the CRT metric chunks and summarise them per design cell x method."""
from clusterhte import io, smk
from clusterhte.stages import crt

with smk.logged(snakemake):
    p = snakemake.params
    files = list(snakemake.input)
    tables = {cell: [io.read_parquet(f) for f in files[i * p.chunks:(i + 1) * p.chunks]]
              for i, cell in enumerate(p.cells)}
    per_rep = crt.collect(tables)
    pr = smk.prov(snakemake, {"cells": p.cells})
    io.write_parquet(per_rep, snakemake.output.per_rep, prov=pr)
    io.write_parquet(crt.summary(per_rep), snakemake.output.summary, prov=pr, csv=True)
