# clusterhte workflow: data -> simulate -> fit -> evaluate -> aggregate -> figures -> report.
# Default (quick) profile: config/config.yaml; paper scale: --configfile config/paper.yaml.
# Every study section (otr, crt, tassh, cct, trials) is optional: rule all asks for the outputs of
# the sections present in the config.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from clusterhte import config as chconfig
from clusterhte.stages.fitting import n_chunks

# A run config given with --configfile is used as it is (paper.yaml is complete); without one the
# quick profile config/config.yaml is the base and --config key=value pairs update it.
if "seed" not in config:
    _given = dict(config)
    config.clear()
    config.update(chconfig.load_yaml("config/config.yaml"))
    chconfig.deep_update(config, _given)

METHOD_CFG = chconfig.load_yaml("config/methods.yaml")
try:
    chconfig.validate(config, METHOD_CFG, "workflow/schemas/config.schema.yaml")
    TRIALS = chconfig.load_trials(config)
except chconfig.ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}")

SEED = config["seed"]
RPC = config["reps_per_chunk"]
SHARED = Path(config.get("shared_dir", "../shared"))
RESOURCES = config.get("resources", {})


def method_params(section, method):
    """Hyperparameters of ``method``: config/methods.yaml updated by the section's overrides."""
    return chconfig.method_params(METHOD_CFG, section if isinstance(section, dict) else config[section],
                                  method)


def method_threads(study, method):
    r = RESOURCES.get(method) or {}
    return int(r.get("threads", (RESOURCES.get("default") or {}).get("threads", 1)))


def method_resource(study, method, key, default):
    r = RESOURCES.get(method) or {}
    return r.get(key, (RESOURCES.get("default") or {}).get(key, default))


TARGETS = []

# ---------------------------------------------------------------- multisite OTR study
if "otr" in config:
    from clusterhte.simulate import otr_designs

    OTR = config["otr"]
    OTR_CELLS = [otr_designs.cell_name(d, J, n) for d in OTR["designs"] for J, n in OTR["sizes"]]
    OTR_CHUNKS = list(range(n_chunks(OTR["replicates"], RPC)))
    # Jobs are per design (simulate, evaluate) and per method x design (fit), each streaming the
    # chunk files of the design's cells: (cell, chunk) pairs in that order, as output patterns.
    OTR_DESIGN_FILES = [(otr_designs.cell_name("{design}", J, n), k) for J, n in OTR["sizes"]
                        for k in OTR_CHUNKS]
    OTR_FIGURES = expand("results/figures/otr/{kind}_{design}.{ext}", kind=["accuracy", "metrics"],
                         design=OTR["designs"], ext=["png", "pdf"])
    if list(OTR.get("congruence_size", [25, 150])) in [list(s) for s in OTR["sizes"]]:
        OTR_FIGURES += expand("results/figures/otr/congruence_{design}.{ext}", design=OTR["designs"],
                              ext=["png", "pdf"])
    TARGETS += ["results/tables/otr_summary.csv"] + OTR_FIGURES

# ---------------------------------------------------------------- CRT-CATE simulation study
if "crt" in config:
    from clusterhte.stages import crt as crt_stage

    CRT = config["crt"]
    CRT_RPC = CRT.get("reps_per_chunk", RPC)
    CRT_CELLS = crt_stage.cells(CRT)
    CRT_CHUNKS = list(range(n_chunks(CRT["replicates"], CRT_RPC)))
    CRT_FIGURES = expand("results/figures/crt/{kind}.{ext}", kind=["pehe", "coverage", "width",
                                                                   "runtime_vs_pehe"], ext=["png", "pdf"])
    TARGETS += ["results/tables/crt_summary.csv"] + CRT_FIGURES

# ---------------------------------------------------------------- trials analysed once each
# DATASETS: name -> analysis settings. TASSH and CCT come from their config sections, the user's
# trials from the sheet config/trials.tsv (config key trials.sheet).
DATASETS = {}
TASSH_RAW = "data/raw/tassh/bp_ghana.rda"
TASSH_STATUS = "results/data/tassh_source.json"
if "tassh" in config:
    TASSH = config["tassh"]
    DATASETS["tassh"] = dict(TASSH, kind="crt", larger_is_better=False,
                             outcome_label="change in SBP (mm Hg)")
    # A "skipped" record of an earlier run is dropped, so each run tries again to get the file.
    if Path(TASSH_STATUS).exists() and not chconfig.tassh_available(TASSH_STATUS):
        Path(TASSH_STATUS).unlink()
if "cct" in config:
    CCT = config["cct"]
    CCT_REAL = Path(CCT.get("raw", "data/raw/cct/Public_Data_AEJApp_2010-0132.dta"))
    CCT_NAME = "cct" if CCT_REAL.exists() else "cct_synthetic"
    DATASETS[CCT_NAME] = dict(CCT, kind="otr", larger_is_better=True)
    TARGETS += [f"results/reports/{CCT_NAME}.html"]
for _name, _row in TRIALS.items():
    DATASETS[_name] = dict(_row, kind="trial")
    TARGETS += [f"results/reports/{_name}.html"]
DATASET_NAMES = list(DATASETS) or ["none"]
DATASET_FIGURES = ["cate_distribution", "subgroup_forest", "cluster_caterpillar", "agreement"]
CCT_FIGURES = ["recommended_shares", "congruence", "recommended_by_income", "benefit_by_grade",
               "treated_shares"]
REPORT_NOTEBOOK = {"crt": "notebooks/tassh.ipynb", "otr": "notebooks/cct.ipynb", "trial": "notebooks/trial.ipynb"}
if DATASETS:
    from clusterhte.stages.apply import SUMMARY_TABLES


wildcard_constraints:
    cell=r"[A-Za-z0-9_.\-]+",
    k=r"\d+",
    method=r"[a-z0-9\-]+",
    design=r"d[1-4]",
    dataset="|".join(DATASET_NAMES),


include: "workflow/rules/data.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


def tassh_targets(wildcards):
    """The TASSH report when the data file is in place (decided by the tassh_fetch checkpoint)."""
    if "tassh" not in config:
        return []
    status = checkpoints.tassh_fetch.get().output[0]
    return ["results/reports/tassh.html"] if chconfig.tassh_available(status) else []


rule all:
    input:
        TARGETS,
        tassh_targets,


def _tassh_skipped():
    if "tassh" in config and Path(TASSH_STATUS).exists() and not chconfig.tassh_available(TASSH_STATUS):
        print(f"TASSH skipped: {chconfig.tassh_status(TASSH_STATUS).get('message', '')}", file=sys.stderr)


onsuccess:
    _tassh_skipped()


onerror:
    _tassh_skipped()
