"""Stack the OTR metric chunks and summarise them per design x size x method."""
from clusterhte import io, smk
from clusterhte.stages import otr

with smk.logged(snakemake):
    p = snakemake.params
    files = list(snakemake.input)
    tables = {cell: [io.read_parquet(f) for f in files[i * p.chunks:(i + 1) * p.chunks]]
              for i, cell in enumerate(p.cells)}
    per_rep = otr.collect(tables)
    pr = smk.prov(snakemake, {"cells": p.cells})
    io.write_parquet(per_rep, snakemake.output.per_rep, prov=pr)
    io.write_parquet(otr.summary(per_rep), snakemake.output.summary, prov=pr, csv=True)
    io.write_parquet(otr.congruence(per_rep), snakemake.output.congruence, prov=pr)
