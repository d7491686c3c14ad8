# Stage: fit. One job per method x cell x chunk; a method's hyperparameters are a param, so
# changing them in config/methods.yaml reruns only that method's jobs and what depends on them.

rule otr_fit:
    input:
        "results/sim/otr/{cell}/chunk{k}.parquet",
    output:
        "results/fits/otr/{method}/{cell}/chunk{k}.parquet",
    params:
        hyper=lambda w: method_params("otr", w.method),
        seed=SEED,
    log:
        "results/logs/otr_fit/{method}/{cell}/chunk{k}.log",
    script:
        "../../scripts/otr_fit.py"
