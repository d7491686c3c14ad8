"""Stack the metric chunks of a simulation study and summarise them per design cell x method."""
from clusterhte import io, smk, stages

with smk.logged(snakemake):
    p = snakemake.params
    study = stages.study(p.study)
    files = list(snakemake.input)
    chunks = {cell: [io.read_parquet(f) for f in files[i * p.chunks:(i + 1) * p.chunks]]
              for i, cell in enumerate(p.cells)}
    per_rep = study.collect(chunks)
    pr = smk.prov(snakemake, {"cells": p.cells})
    io.write_parquet(per_rep, snakemake.output.per_rep, prov=pr)
    for name, table in study.tables(per_rep).items():
        io.write_parquet(table, snakemake.output[name], prov=pr, csv=name == "summary")
