# Stage: figures (PNG for screens, PDF for papers).

rule otr_figures:
    input:
        per_rep="results/tables/otr_metrics.parquet",
        congruence="results/tables/otr_congruence.parquet",
    output:
        accuracy=multiext("results/figures/otr/accuracy_{design}", ".png", ".pdf"),
        metrics=multiext("results/figures/otr/metrics_{design}", ".png", ".pdf"),
    log:
        "results/logs/otr_figures/{design}.log",
    script:
        "../../scripts/otr_figures.py"


rule otr_congruence_figure:
    input:
        congruence="results/tables/otr_congruence.parquet",
    output:
        multiext("results/figures/otr/congruence_{design}", ".png", ".pdf"),
    params:
        size=OTR.get("congruence_size", [25, 150]),
    log:
        "results/logs/otr_figures/congruence_{design}.log",
    script:
        "../../scripts/otr_congruence_figure.py"
