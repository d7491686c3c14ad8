# Stage: fit. OTR: one job per method x design, streaming the chunks of the design's cells (one fit
# file per cell x chunk);
# CRT: one job per method x cell x chunk. A method's hyperparameters are a param, so changing them
# in config/methods.yaml reruns only that method's jobs and what depends on them.

if "otr" in config:

    rule otr_fit:
        input:
            [f"results/sim/otr/{c}/chunk{k}.parquet" for c, k in OTR_DESIGN_FILES],
        output:
            [f"results/fits/otr/{{method}}/{c}/chunk{k}.parquet" for c, k in OTR_DESIGN_FILES],
        params:
            hyper=lambda w: method_params("otr", w.method),
            seed=SEED,
            study="otr",
            cells=lambda w: [c.format(design=w.design) for c, _ in OTR_DESIGN_FILES],
        threads: lambda w: method_threads("otr", w.method)
        resources:
            mem_mb=lambda w: method_resource("otr", w.method, "mem_mb", 2000),
            runtime=lambda w: method_resource("otr", w.method, "runtime", 120),
        group: "otr_fit"
        log:
            "results/logs/otr_fit/{method}/{design}.log",
        script:
            "../../scripts/otr_fit.py"


if "crt" in config:

    rule crt_fit:
        input:
            "results/sim/crt/{cell}/chunk{k}.parquet",
        output:
            "results/fits/crt/{method}/{cell}/chunk{k}.parquet",
        params:
            hyper=lambda w: method_params("crt", w.method),
            seed=SEED,
            study="crt",
        threads: lambda w: method_threads("crt", w.method)
        resources:
            mem_mb=lambda w: method_resource("crt", w.method, "mem_mb", 4000),
            runtime=lambda w: method_resource("crt", w.method, "runtime", 120),
        group: "crt_fit"
        log:
            "results/logs/crt_fit/{method}/{cell}/chunk{k}.log",
        script:
            "../../scripts/sim_fit.py"


if DATASETS:

    rule dataset_fit:
        input:
            "results/data/{dataset}.parquet",
        output:
            fits="results/fits/{dataset}/{method}.parquet",
            ppc="results/fits/{dataset}/{method}_ppc.parquet",
            draws="results/fits/{dataset}/{method}_draws.parquet",
        params:
            hyper=lambda w: method_params(DATASETS[w.dataset], w.method),
            seed=SEED,
            larger_is_better=lambda w: DATASETS[w.dataset].get("larger_is_better", True),
        threads: lambda w: method_threads(w.dataset, w.method)
        resources:
            mem_mb=lambda w: method_resource(w.dataset, w.method, "mem_mb", 4000),
            runtime=lambda w: method_resource(w.dataset, w.method, "runtime", 240),
        log:
            "results/logs/fit/{dataset}/{method}.log",
        script:
            "../../scripts/dataset_fit.py"
