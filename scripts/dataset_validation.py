"""Validation of one analysed trial (is the heterogeneity real?): the out-of-fold fit of one method
(rule dataset_validation_fit), the tables of every method (dataset_validation) or their figures
(dataset_validation_figures). Statistics live in clusterhte.evaluate.validation."""
from clusterhte import smk

smk.limit_threads(snakemake.threads)
import traceback  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from clusterhte import io  # noqa: E402
from clusterhte.evaluate import validation as V  # noqa: E402

with smk.logged(snakemake) as log:
    p, w = snakemake.params, snakemake.wildcards
    if snakemake.rule == "dataset_validation_fit":
        trial = io.read_trial(snakemake.input[0])
        try:
            oof = V.cross_fit(trial, w.method, dict(p.hyper), p.seed, k=p.folds,
                              larger_is_better=p.larger_is_better, threads=snakemake.threads, log=log)
            oof["error"] = ""
        except Exception as e:  # noqa: BLE001 - recorded; the other methods are still validated
            traceback.print_exc(file=log)
            oof = pd.DataFrame({"row": np.arange(trial.n), "cluster": trial.cluster, "fold": -1,
                                "cate": np.nan, "decision": np.int8(-1), "seconds": np.nan,
                                "error": f"{type(e).__name__}: {e}"})
        pr = smk.prov(snakemake, {"method": w.method, "hyperparameters": dict(p.hyper), "folds": p.folds},
                      seed=p.seed)
        io.write_parquet(oof, snakemake.output[0], prov=pr)
    elif snakemake.rule == "dataset_validation":
        trial = io.read_trial(snakemake.input.data)
        fits = {m: io.read_parquet(f) for m, f in zip(p.methods, snakemake.input.oof)}
        failed = {m: f["error"].iloc[0] for m, f in fits.items() if f["error"].iloc[0]}
        oof = {m: f for m, f in fits.items() if m not in failed}
        tables = V.assess(trial, oof, p.seed, larger_is_better=p.larger_is_better, n_groups=p.groups,
                          n_boot=p.boot, failed=failed)
        pr = smk.prov(snakemake, {"larger_is_better": p.larger_is_better, "groups": p.groups,
                                  "boot": p.boot}, seed=p.seed)
        for name, path in zip(p.tables, snakemake.output):
            io.write_parquet(tables[name], path, prov=pr, csv=True)
    else:
        import matplotlib

        matplotlib.use("Agg")
        from clusterhte.plots import save_figure
        from clusterhte.plots import validation as plots

        T = {k: io.read_parquet(snakemake.input[k]) for k in ("gates", "calibration", "toc", "model_selection")}
        tag = "SYNTHETIC DATA — " if p.synthetic else ""
        figs = {
            "validation_calibration": plots.calibration_plot(
                T["gates"], T["calibration"], outcome=p.outcome,
                title=f"{tag}Calibration of out-of-fold CATEs ({w.dataset})"),
            "validation_toc": plots.toc_curves(T["toc"], title=f"{tag}TOC curves ({w.dataset})"),
            "validation_gates": plots.gates_forest(T["gates"], outcome=p.outcome,
                                                   title=f"{tag}GATES ({w.dataset})"),
            "validation_loss": plots.loss_differences(T["model_selection"],
                                                      title=f"{tag}Model selection ({w.dataset})"),
        }
        out = list(snakemake.output)
        for i, name in enumerate(p.figures):
            save_figure(figs[name], out[2 * i:2 * i + 2])
