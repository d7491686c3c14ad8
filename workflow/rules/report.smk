# Stage: report. Parameterised notebooks executed by papermill and converted to HTML; the
# Snakemake report (make report) collects every figure with its caption.

if DATASETS:

    rule report_notebook:
        input:
            tables=expand("results/tables/{{dataset}}/{table}.parquet", table=SUMMARY_TABLES + VALIDATION_TABLES),
            figures=lambda w: expand("results/figures/{dataset}/{figure}.png", dataset=w.dataset,
                                     figure=DATASET_FIGURES + VALIDATION_FIGURES
                                     + (CCT_FIGURES if w.dataset.startswith("cct") else [])),
            data="results/data/{dataset}.parquet",
            notebook=lambda w: REPORT_NOTEBOOK[DATASETS[w.dataset]["kind"]],
        output:
            html=report("results/reports/{dataset}.html", category="Reports"),
            notebook="results/reports/{dataset}.ipynb",
        params:
            parameters=lambda w: dict(dataset=w.dataset, synthetic=w.dataset.endswith("_synthetic"),
                                      larger_is_better=DATASETS[w.dataset].get("larger_is_better", True),
                                      reference=DATASETS[w.dataset].get("reference_method", "lmm"),
                                      outcome=DATASETS[w.dataset].get("outcome_label", "the outcome")),
        log:
            "results/logs/report/{dataset}.log",
        script:
            "../../scripts/report_notebook.py"
