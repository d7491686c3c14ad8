"""Execute a report notebook with papermill and convert it to HTML (fails on any error cell)."""
from clusterhte import report, smk

with smk.logged(snakemake):
    report.render(snakemake.input.notebook, snakemake.output.html, dict(snakemake.params.parameters),
                  notebook=snakemake.output.notebook)
