"""Accuracy boxplots (paper Figures 1, 3, 5) and metric panels (Figures 10-14) of one design."""
import matplotlib

matplotlib.use("Agg")
from clusterhte import io, smk  # noqa: E402
from clusterhte.plots import otr as plots, save_figure  # noqa: E402

with smk.logged(snakemake):
    d = snakemake.wildcards.design
    per_rep = io.read_parquet(snakemake.input.per_rep)
    per_rep = per_rep[per_rep["design"] == d]
    save_figure(plots.accuracy_boxplots(per_rep, d), snakemake.output.accuracy)
    save_figure(plots.metric_panels(per_rep, d), snakemake.output.metrics)
