"""PEHE, coverage and width by method faceted by design cell; runtime against PEHE."""
import matplotlib

matplotlib.use("Agg")
from clusterhte import io, smk  # noqa: E402
from clusterhte.plots import crt as plots, save_figure  # noqa: E402

with smk.logged(snakemake):
    per_rep = io.read_parquet(snakemake.input.per_rep)
    summary = io.read_parquet(snakemake.input.summary)
    out = snakemake.output
    save_figure(plots.metric_by_method(per_rep, "pehe_out"), out.pehe)
    save_figure(plots.metric_by_method(per_rep, "coverage"), out.coverage)
    save_figure(plots.metric_by_method(per_rep, "width"), out.width)
    save_figure(plots.runtime_vs_pehe(summary), out.runtime)
