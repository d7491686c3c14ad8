"""CATE distribution, subgroup forest, cluster caterpillar and agreement heatmap of one trial."""
import matplotlib

matplotlib.use("Agg")
from clusterhte import io, smk  # noqa: E402
from clusterhte.plots import cate as plots, save_figure  # noqa: E402

with smk.logged(snakemake):
    p, w = snakemake.params, snakemake.wildcards
    kw = dict(larger_is_better=p.larger_is_better, outcome=p.outcome)
    tag = "SYNTHETIC DATA — " if p.synthetic else ""
    figs = {
        "cate_distribution": plots.cate_distribution(io.read_parquet(snakemake.input.cates), **kw,
                                                     title=f"{tag}CATEs by method ({w.dataset})"),
        "subgroup_forest": plots.subgroup_forest(io.read_parquet(snakemake.input.subgroups), **kw,
                                                 title=f"{tag}Subgroup CATEs ({w.dataset})"),
        "cluster_caterpillar": plots.cluster_caterpillar(io.read_parquet(snakemake.input.clusters), **kw,
                                                         title=f"{tag}Cluster-average CATEs ({w.dataset})"),
        "agreement": plots.agreement_heatmap(io.read_parquet(snakemake.input.agreement),
                                             title=f"{tag}Agreement between methods ({w.dataset})"),
    }
    out = list(snakemake.output)
    for i, name in enumerate(p.figures):
        save_figure(figs[name], out[2 * i:2 * i + 2])
