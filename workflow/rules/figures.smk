# Stage: figures (PNG for screens and the Snakemake report, PDF for papers).

if "otr" in config:

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


if "crt" in config:

    rule crt_figures:
        input:
            per_rep="results/tables/crt_metrics.parquet",
            summary="results/tables/crt_summary.parquet",
        output:
            pehe=[report("results/figures/crt/pehe.png", caption="../report/crt_pehe.rst",
                         category="CRT-CATE simulation"), "results/figures/crt/pehe.pdf"],
            coverage=[report("results/figures/crt/coverage.png", caption="../report/crt_coverage.rst",
                             category="CRT-CATE simulation"), "results/figures/crt/coverage.pdf"],
            width=[report("results/figures/crt/width.png", caption="../report/crt_width.rst",
                          category="CRT-CATE simulation"), "results/figures/crt/width.pdf"],
            runtime=[report("results/figures/crt/runtime_vs_pehe.png", caption="../report/crt_runtime.rst",
                            category="CRT-CATE simulation"), "results/figures/crt/runtime_vs_pehe.pdf"],
        log:
            "results/logs/crt_figures.log",
        script:
            "../../scripts/crt_figures.py"


if DATASETS:

    rule dataset_figures:
        # CATE distribution per method, subgroup forest plot, cluster-average caterpillar plot and
        # method-agreement heatmap of one analysed trial.
        input:
            cates="results/tables/{dataset}/cates.parquet",
            subgroups="results/tables/{dataset}/subgroups.parquet",
            clusters="results/tables/{dataset}/clusters.parquet",
            agreement="results/tables/{dataset}/agreement.parquet",
        output:
            [f for fig in DATASET_FIGURES for f in (
                report(f"results/figures/{{dataset}}/{fig}.png", caption=f"../report/trial_{fig}.rst",
                       category="Trials", subcategory="{dataset}"),
                f"results/figures/{{dataset}}/{fig}.pdf")],
        params:
            larger_is_better=lambda w: DATASETS[w.dataset].get("larger_is_better", True),
            outcome=lambda w: DATASETS[w.dataset].get("outcome_label", DATASETS[w.dataset].get("outcome", "the outcome")),
            synthetic=lambda w: w.dataset.endswith("_synthetic"),
            figures=DATASET_FIGURES,
        log:
            "results/logs/figures/{dataset}.log",
        script:
            "../../scripts/dataset_figures.py"


if "cct" in config:

    rule cct_figures:
        # Paper Section 6: Figures 6-9 and the school-level treated shares.
        input:
            data=f"results/data/{CCT_NAME}.parquet",
            cates=f"results/tables/{CCT_NAME}/cates.parquet",
        output:
            [f for fig in CCT_FIGURES for f in (
                report(f"results/figures/{CCT_NAME}/{fig}.png", caption=f"../report/cct_{fig}.rst",
                       category="Trials", subcategory=CCT_NAME),
                f"results/figures/{CCT_NAME}/{fig}.pdf")],
        params:
            synthetic=CCT_NAME.endswith("_synthetic"),
            figures=CCT_FIGURES,
        log:
            f"results/logs/figures/{CCT_NAME}_paper.log",
        script:
            "../../scripts/cct_figures.py"


if DATASETS:

    rule dataset_validation_figures:
        # Calibration plot, TOC curves, GATES forest and loss differences of one analysed trial.
        input:
            gates="results/tables/{dataset}/gates.parquet",
            calibration="results/tables/{dataset}/calibration.parquet",
            toc="results/tables/{dataset}/toc.parquet",
            model_selection="results/tables/{dataset}/model_selection.parquet",
        output:
            [f for fig in VALIDATION_FIGURES for f in (
                report(f"results/figures/{{dataset}}/{fig}.png", caption=f"../report/trial_{fig}.rst",
                       category="Trials", subcategory="{dataset}"),
                f"results/figures/{{dataset}}/{fig}.pdf")],
        params:
            outcome=lambda w: DATASETS[w.dataset].get("outcome_label", DATASETS[w.dataset].get("outcome", "the outcome")),
            synthetic=lambda w: w.dataset.endswith("_synthetic"),
            figures=VALIDATION_FIGURES,
        log:
            "results/logs/figures/{dataset}_validation.log",
        script:
            "../../scripts/dataset_validation.py"
