# Stage: simulate. OTR: one job per design writing one file per cell x chunk of replicates.

if "otr" in config:

    rule otr_simulate:
        output:
            [f"results/sim/otr/{c}/chunk{k}.parquet" for c, k in OTR_DESIGN_FILES],
        params:
            replicates=OTR["replicates"],
            reps_per_chunk=RPC,
            cells=lambda w: [c.format(design=w.design) for c, _ in OTR_DESIGN_FILES],
            chunks=[k for _, k in OTR_DESIGN_FILES],
            seed=SEED,
        log:
            "results/logs/otr_simulate/{design}.log",
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
