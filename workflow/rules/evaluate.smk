# Stages: evaluate (metrics per chunk) and aggregate (summary tables).

if "otr" in config:

    rule otr_evaluate:
        input:
            sim="results/sim/otr/{cell}/chunk{k}.parquet",
            fits=expand("results/fits/otr/{method}/{{cell}}/chunk{{k}}.parquet", method=OTR["methods"]),
        output:
            "results/metrics/otr/{cell}/chunk{k}.parquet",
        params:
            methods=OTR["methods"],
            rank=OTR.get("rank_correlation", "spearman"),
        log:
            "results/logs/otr_evaluate/{cell}/chunk{k}.log",
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
        log:
            "results/logs/otr_aggregate.log",
        script:
            "../../scripts/otr_aggregate.py"


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
        log:
            "results/logs/crt_aggregate.log",
        script:
            "../../scripts/crt_aggregate.py"
