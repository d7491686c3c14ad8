# Stages: evaluate (metrics per chunk) and aggregate (summary tables).

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
