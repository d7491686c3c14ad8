# Stages: evaluate (metrics per chunk) and aggregate (summary tables).

if "otr" in config:

    rule otr_evaluate:
        # one job per design; fits are listed cell x chunk by cell x chunk, methods in config order
        # within a chunk
        input:
            sim=[f"results/sim/otr/{c}/chunk{k}.parquet" for c, k in OTR_DESIGN_FILES],
            fits=[f"results/fits/otr/{m}/{c}/chunk{k}.parquet" for c, k in OTR_DESIGN_FILES
                  for m in OTR["methods"]],
        output:
            [f"results/metrics/otr/{c}/chunk{k}.parquet" for c, k in OTR_DESIGN_FILES],
        params:
            methods=OTR["methods"],
            rank=OTR.get("rank_correlation", "spearman"),
        log:
            "results/logs/otr_evaluate/{design}.log",
        script:
            "../../scripts/otr_evaluate.py"


    rule otr_aggregate:
        input:
            expand("results/metrics/otr/{cell}/chunk{k}.parquet", cell=OTR_CELLS, k=OTR_CHUNKS),
        output:
            per_rep="results/tables/otr_metrics.parquet",
            summary="results/tables/otr_summary.parquet",
            summary_csv="results/tables/otr_summary.csv",
            congruence="results/tables/otr_congruence.parquet",
        params:
            cells=OTR_CELLS,
            chunks=len(OTR_CHUNKS),
            study="otr",
        log:
            "results/logs/otr_aggregate.log",
        script:
            "../../scripts/sim_aggregate.py"


if "crt" in config:

    rule crt_evaluate:
        input:
            sim="results/sim/crt/{cell}/chunk{k}.parquet",
            fits=expand("results/fits/crt/{method}/{{cell}}/chunk{{k}}.parquet", method=CRT["methods"]),
        output:
            "results/metrics/crt/{cell}/chunk{k}.parquet",
        params:
            methods=CRT["methods"],
        log:
            "results/logs/crt_evaluate/{cell}/chunk{k}.log",
        script:
            "../../scripts/crt_evaluate.py"


    rule crt_aggregate:
        input:
            expand("results/metrics/crt/{cell}/chunk{k}.parquet", cell=CRT_CELLS, k=CRT_CHUNKS),
        output:
            per_rep="results/tables/crt_metrics.parquet",
            summary="results/tables/crt_summary.parquet",
            summary_csv="results/tables/crt_summary.csv",
        params:
            cells=CRT_CELLS,
            chunks=len(CRT_CHUNKS),
            study="crt",
        log:
            "results/logs/crt_aggregate.log",
        script:
            "../../scripts/sim_aggregate.py"


if DATASETS:

    rule dataset_summaries:
        # ATE, CATE distribution, cluster averages, subgroups, best linear projection, share with
        # benefit, agreement between methods and with the reference method, for one trial.
        input:
            data="results/data/{dataset}.parquet",
            fits=lambda w: expand("results/fits/{{dataset}}/{method}.parquet",
                                  method=DATASETS[w.dataset]["methods"]),
            ppc=lambda w: expand("results/fits/{{dataset}}/{method}_ppc.parquet",
                                 method=DATASETS[w.dataset]["methods"]),
            draws=lambda w: expand("results/fits/{{dataset}}/{method}_draws.parquet",
                                   method=DATASETS[w.dataset]["methods"]),
        output:
            expand("results/tables/{{dataset}}/{table}.parquet", table=SUMMARY_TABLES),
        params:
            methods=lambda w: DATASETS[w.dataset]["methods"],
            larger_is_better=lambda w: DATASETS[w.dataset].get("larger_is_better", True),
            reference=lambda w: DATASETS[w.dataset].get("reference_method", "lmm"),
            tables=SUMMARY_TABLES,
        log:
            "results/logs/summaries/{dataset}.log",
        script:
            "../../scripts/dataset_summaries.py"


# ---------------------------------------------------------------- validation: is the heterogeneity real?
# One cross-fitting job per (dataset, method) (K fits over whole clusters, the section's quick
# hyperparameters, interval-only refits off), then one cheap job for the tables of every method.
VALIDATION = config.get("validation") or {}
VALIDATION_FOLDS = int(VALIDATION.get("folds", 5))
VALIDATION_TABLES = ["oof_cates", "calibration", "gates", "rate", "toc", "model_selection",
                     "policy_value", "verdict"]   # blp comes from dataset_summaries
VALIDATION_FIGURES = ["validation_calibration", "validation_toc", "validation_gates", "validation_loss"]

if DATASETS:

    rule dataset_validation_fit:
        input:
            "results/data/{dataset}.parquet",
        output:
            "results/validation/{dataset}/{method}.parquet",
        params:
            hyper=lambda w: method_params(DATASETS[w.dataset], w.method),
            seed=SEED,
            larger_is_better=lambda w: DATASETS[w.dataset].get("larger_is_better", True),
            folds=VALIDATION_FOLDS,
        threads: lambda w: method_threads(w.dataset, w.method)
        resources:
            mem_mb=lambda w: method_resource(w.dataset, w.method, "mem_mb", 4000),
            runtime=lambda w: method_resource(w.dataset, w.method, "runtime", 240),
        log:
            "results/logs/validation/{dataset}/{method}.log",
        script:
            "../../scripts/dataset_validation.py"


    rule dataset_validation:
        # Calibration test, GATES, RATE/TOC, model selection and policy value of every method.
        input:
            data="results/data/{dataset}.parquet",
            oof=lambda w: expand("results/validation/{{dataset}}/{method}.parquet",
                                 method=DATASETS[w.dataset]["methods"]),
        output:
            expand("results/tables/{{dataset}}/{table}.parquet", table=VALIDATION_TABLES),
        params:
            methods=lambda w: DATASETS[w.dataset]["methods"],
            seed=SEED,
            larger_is_better=lambda w: DATASETS[w.dataset].get("larger_is_better", True),
            groups=int(VALIDATION.get("groups", 5)),
            boot=int(VALIDATION.get("boot", 200)),
            tables=VALIDATION_TABLES,
        log:
            "results/logs/validation/{dataset}.log",
        script:
            "../../scripts/dataset_validation.py"
