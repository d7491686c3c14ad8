"""Read and validate a user's trial from the sheet; write the analysis table."""
from clusterhte import io, smk
from clusterhte.data.trial import TrialDataError
from clusterhte.data.user import load_trial

with smk.logged(snakemake):
    r = snakemake.params.row
    try:
        trial = load_trial(snakemake.input[0], r["design"], outcome=r["outcome"], treatment=r["treatment"],
                           cluster=r["cluster"], individual_covariates=r["individual_covariates"],
                           cluster_covariates=r["cluster_covariates"], moderators=r["moderators"],
                           name=r["name"])
    except TrialDataError as e:  # name the sheet's row as well as the file
        raise TrialDataError(f"trial '{r['name']}' of the trial sheet: {e}") from None
    io.write_trial(trial, snakemake.output[0], prov=smk.prov(snakemake, {"row": r}))
