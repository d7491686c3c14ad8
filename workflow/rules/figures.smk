# Stage: figures (PNG for screens and the Snakemake report, PDF for papers).

rule otr_figures:
    input:
        per_rep="results/tables/otr_metrics.parquet",
    output:
        accuracy=[report("results/figures/otr/accuracy_{design}.png", caption="../report/otr_accuracy.rst",
                         category="Multisite OTR simulation", subcategory="Design {design}"),
                  "results/figures/otr/accuracy_{design}.pdf"],
        metrics=[report("results/figures/otr/metrics_{design}.png", caption="../report/otr_metrics.rst",
                        category="Multisite OTR simulation", subcategory="Design {design}"),
                 "results/figures/otr/metrics_{design}.pdf"],
    log:
        "results/logs/otr_figures/{design}.log",
    script:
        "../../scripts/otr_figures.py"


rule otr_congruence_figure:
    input:
        congruence="results/tables/otr_congruence.parquet",
    output:
        report("results/figures/otr/congruence_{design}.png", caption="../report/otr_congruence.rst",
               category="Multisite OTR simulation", subcategory="Design {design}"),
        "results/figures/otr/congruence_{design}.pdf",
    params:
        size=OTR.get("congruence_size", [25, 150]),
    log:
        "results/logs/otr_figures/congruence_{design}.log",
    script:
        "../../scripts/otr_congruence_figure.py"
