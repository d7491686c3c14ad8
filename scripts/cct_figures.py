"""CCT application figures (paper Figures 6-9) and the school-level treated shares."""
import matplotlib

matplotlib.use("Agg")
from clusterhte import io, smk  # noqa: E402
from clusterhte.data import cct  # noqa: E402
from clusterhte.plots import cct as plots, save_figure  # noqa: E402

with smk.logged(snakemake):
    p = snakemake.params
    trial = io.read_trial(snakemake.input.data)
    cates = io.read_parquet(snakemake.input.cates)
    f, syn = trial.frame, p.synthetic
    figs = {
        "recommended_shares": plots.recommended_shares(cates, synthetic=syn),
        "congruence": plots.congruence(cates, synthetic=syn),
        "recommended_by_income": plots.recommended_by_income(cates, f["inc_380"], synthetic=syn),
        "benefit_by_grade": plots.benefit_by_grade(cates, cct.grade_of(f), synthetic=syn),
        "treated_shares": plots.treated_share_hist(f, synthetic=syn),
    }
    out = list(snakemake.output)
    for i, name in enumerate(p.figures):
        save_figure(figs[name], out[2 * i:2 * i + 2])
