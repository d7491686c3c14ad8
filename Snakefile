# clusterhte workflow: data -> simulate -> fit -> evaluate -> aggregate -> figures -> report.
# Default (quick) profile: config/config.yaml; paper scale: --configfile config/paper.yaml.
from pathlib import Path

from snakemake.exceptions import WorkflowError

from clusterhte import config as chconfig
from clusterhte.simulate import otr_designs
from clusterhte.stages.fitting import n_chunks

configfile: "config/config.yaml"

METHOD_CFG = chconfig.load_yaml("config/methods.yaml")
try:
    chconfig.validate(config, METHOD_CFG, "workflow/schemas/config.schema.yaml")
except chconfig.ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}")

SEED = config["seed"]
RPC = config["reps_per_chunk"]


def method_params(study, method):
    return chconfig.method_params(METHOD_CFG, config[study], method)


# ---------------------------------------------------------------- multisite OTR study
OTR = config["otr"]
OTR_CELLS = [otr_designs.cell_name(d, J, n) for d in OTR["designs"] for J, n in OTR["sizes"]]
OTR_CHUNKS = list(range(n_chunks(OTR["replicates"], RPC)))
OTR_FIGURES = expand("results/figures/otr/{kind}_{design}.{ext}", kind=["accuracy", "metrics"],
                     design=OTR["designs"], ext=["png", "pdf"])
if list(OTR.get("congruence_size", [25, 150])) in [list(s) for s in OTR["sizes"]]:
    OTR_FIGURES += expand("results/figures/otr/congruence_{design}.{ext}", design=OTR["designs"],
                          ext=["png", "pdf"])

wildcard_constraints:
    cell=r"[A-Za-z0-9_.\-]+",
    k=r"\d+",
    method=r"[a-z0-9\-]+",
    design=r"d[1-4]",


include: "workflow/rules/simulate.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        "results/tables/otr_summary.csv",
        OTR_FIGURES,
