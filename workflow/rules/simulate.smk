# Stage: simulate. One job per cell x chunk of replicates.

rule otr_simulate:
    output:
        "results/sim/otr/{cell}/chunk{k}.parquet",
    params:
        replicates=OTR["replicates"],
        reps_per_chunk=RPC,
        seed=SEED,
    log:
        "results/logs/otr_simulate/{cell}/chunk{k}.log",
    script:
        "../../scripts/otr_simulate.py"
