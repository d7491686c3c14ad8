"""Congruence heatmap of one design at the configured (J, n) (paper Figures 2, 4, 13, 15)."""
import matplotlib

matplotlib.use("Agg")
from clusterhte import io, methods, smk  # noqa: E402
from clusterhte.plots import otr as plots, save_figure  # noqa: E402
from clusterhte.stages import otr  # noqa: E402

with smk.logged(snakemake):
    d = snakemake.wildcards.design
    J, n = snakemake.params.size
    cong = io.read_parquet(snakemake.input.congruence)
    m = otr.congruence_matrix(cong, d, J, n, methods.OTR_METHODS)
    fig = plots.congruence_heatmap(m.to_numpy(), list(m.index),
                                   f"Congruence among the estimators, Design {d[1:]}, J = {J}, n = {n}")
    save_figure(fig, snakemake.output)
