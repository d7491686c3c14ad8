# Stage: simulate. OTR: one job per design cell writing one file per chunk of replicates.

if "otr" in config:

    rule otr_simulate:
        output:
            expand("results/sim/otr/{{cell}}/chunk{k}.parquet", k=OTR_CHUNKS),
        params:
            replicates=OTR["replicates"],
            reps_per_chunk=RPC,
            chunks=OTR_CHUNKS,
            seed=SEED,
        log:
            "results/logs/otr_simulate/{cell}.log",
        script:
            "../../scripts/otr_simulate.py"


if "crt" in config:

    rule crt_simulate:
        output:
            "results/sim/crt/{cell}/chunk{k}.parquet",
        params:
            replicates=CRT["replicates"],
            reps_per_chunk=CRT_RPC,
            seed=SEED,
            n_test_clusters=CRT.get("n_test_clusters", 50),
            test_cluster_size=CRT.get("test_cluster_size", 20),
        log:
            "results/logs/crt_simulate/{cell}/chunk{k}.log",
        script:
            "../../scripts/crt_simulate.py"
