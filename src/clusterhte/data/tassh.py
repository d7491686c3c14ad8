"""The Ghana TASSH cluster-randomized trial: reading, cleaning, analysis table.

Trial: Task Shifting and Blood Pressure Control in Ghana (Ogedegbe et al., PLoS Med 2018;
15(5):e1002561; NCT01802372); 32 health centres (sites) randomized 16:16 to nurse-led task
shifting plus health insurance (``TrtorCtrl = 1``) or health insurance alone (``0``). Data: the
``bp_ghana`` object of the R package ``bp`` (the four CC0 Dryad files of doi:10.5061/dryad.16c9m51
joined into one long table, 757 patients x 3 visits), pinned by :data:`URL` and :data:`SHA256`.
Paper label: the TASSH application of the CRT-CATE study (spec ``crt_cate.md`` §5).

Estimand of the analysis table: the CATE of the intervention on the change in systolic blood
pressure, ``outcome = SBP(12 months) - SBP(baseline)`` in mm Hg. A *lower* change is better, so a
patient benefits when the CATE is below 0 (:data:`LARGER_IS_BETTER` is ``False``).

Cleaning decisions (:func:`clean`):

1. One row per patient: the patient-level columns must be constant across the three visits of an
   ID (checked); SBP is taken from the ``Baseline`` and ``12Months`` rows.
2. Site = cluster (``SiteNumber``), ``TrtorCtrl`` = treatment. Treatment and the four site columns
   must be constant within a site on the *enrolled* patients (checked; the error names the site).
3. Exclusions, in order, counted in a CONSORT-style table (patients, sites, per arm): missing
   baseline SBP (1 patient), then missing 12-month SBP (115). Analysis sample: 641 complete cases
   in 32 sites (318 control, 323 intervention). Complete-case analysis follows spec §5.3; multiple
   imputation or weighting would be a sensitivity analysis, not done here.
4. Missing-value codes are decoded to NaN: ``BMI == 0``, ``Age == 0``, ``EmploymentStatus == 999``,
   ``EducationLevel == "999"`` (``Income == "0"`` and ``CVRisk == "999"`` too, but those columns
   are not kept). A kept covariate with missing values in the analysis sample is mean-imputed
   (mean over the analysis sample; the outcome is not used) and gets a 0/1 indicator
   ``<name>_missing`` when at least ``min_missing_indicator`` (default
   :data:`MIN_MISSING_INDICATOR` = 10) patients are missing. Rarer gaps are imputed without an
   indicator: a column that is 1 for one patient is a leverage-one dummy for linear models and is
   constant in most cluster-bootstrap samples. On this file: BMI 232, education 56, employment 45
   missing in the analysis sample (indicators kept); age 1 (imputed, no indicator).
5. Individual covariates (X, spec §5.3): ``age`` (years), ``female`` (``Gender``, 1 = female),
   ``sbp_baseline`` (mm Hg), ``bmi`` (kg/m², 0 → missing), ``literate`` (``Literacy``),
   ``employed`` (``EmploymentStatus``), ``smoker`` (current or ex-smoker: ``Smoking`` codes 0–3;
   code 4 = never smoked), ``education`` (ordinal 0–8, :data:`EDUCATION_LEVELS`),
   ``physical_activity`` (MET-min/week, as recorded).
6. Cluster covariates (V): ``rural_urban`` (the raw ``RuralUrban`` 0/1 code; the file carries no
   value labels, so the code is kept and subgroups are labelled by code), ``doctors``
   (``DoctorsAvailable``), ``nurses`` (``NursesAvailable``), ``patients_per_year``
   (``Patientsannually``), ``cluster_size`` (patients *enrolled* at the site, before exclusions).
7. Not kept: ``Income`` (80% coded "0", not reported), ``CVRisk`` (a composite partly derived from
   blood pressure and age; 18% coded "999"), ``BMIClassification`` (a coarsening of BMI with the
   same missing code), ``DBP`` (not in the spec's covariate list).
8. The raw subgroup variables (female, age, baseline SBP, rural/urban) are covariates, so subgroup
   tables (:data:`SUBGROUPS`) are computed from the analysis table itself. Patients with imputed
   age (``age_missing == 1``) fall in the age subgroup of the imputed mean.

The table is written with design ``"crt"`` and no moderators. No R cleaning script of the paper is
public; these steps implement spec §5.3 and reproduce the spec's verified complete-case numbers
(641 patients; random-intercept LMM difference -2.95, SE 1.92). The patient IDs, in row order, are in
``trial.extra["patient_id"]`` (not written to Parquet).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from clusterhte.data.trial import TrialData, TrialDataError

URL = ("https://raw.githubusercontent.com/johnschwenck/bp/"
       "7a46622e39b3133c48a914c4b6df64d25c500ca2/data/bp_ghana.rda")
SHA256 = "92e58b07f63d2b0341ff1b56b84ba1685a6b27d9941be9dbe5e930481b689ce1"
FILENAME = "bp_ghana.rda"
OBJECT = "bp_ghana"
NAME = "tassh"
LARGER_IS_BETTER = False

RAW_COLUMNS = ("ID", "Time_Elapsed", "SBP", "DBP", "Age", "Gender", "EducationLevel",
               "EmploymentStatus", "Literacy", "Smoking", "Income", "SiteNumber", "CVRisk", "BMI",
               "BMIClassification", "PhysicalActivity", "TrtorCtrl", "RuralUrban",
               "DoctorsAvailable", "NursesAvailable", "Patientsannually")
VISITS = ("Baseline", "6Months", "12Months")
SITE_COLUMNS = ("TrtorCtrl", "RuralUrban", "DoctorsAvailable", "NursesAvailable", "Patientsannually")
PATIENT_COLUMNS = ("Age", "Gender", "EducationLevel", "EmploymentStatus", "Literacy", "Smoking",
                   "Income", "SiteNumber", "CVRisk", "BMI", "BMIClassification",
                   "PhysicalActivity") + SITE_COLUMNS

# Highest level of schooling, in order (the "999" code is missing).
EDUCATION_LEVELS = (
    "No Schooling",
    "Primary Schooling (Grades 1 to 6)",
    "Junior Secondary Schooling (JSS) (Grades 7-8)",
    "Secondary School (Grades 9-11)",
    "Completed Secondary School",
    "Technical school certificate",
    "Some college but no degree",
    "Associate degree",
    "Graduate or Professional school (MD, JD, etc.)",
)
NEVER_SMOKED = 4
MIN_MISSING_INDICATOR = 10

INDIVIDUAL = ("age", "female", "sbp_baseline", "bmi", "literate", "employed", "smoker",
              "education", "physical_activity")
CLUSTER = ("rural_urban", "doctors", "nurses", "patients_per_year", "cluster_size")

# Subgroups of spec §5.3: name -> (column, threshold rule, label of the group where it holds,
# label of the complement). Used with clusterhte.evaluate.summaries.subgroup_table.
SUBGROUPS = {
    "sex": ("female", "==1", "female", "male"),
    "age": ("age", ">=60", "age >= 60", "age < 60"),
    "baseline SBP": ("sbp_baseline", ">=160", "SBP >= 160", "SBP < 160"),
    "site type": ("rural_urban", "==1", "RuralUrban = 1", "RuralUrban = 0"),
}


def subgroup_masks(frame: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """Boolean masks of the spec §5.3 subgroups: ``{(variable, group label): mask}``."""
    out = {}
    for var, (col, rule, yes, no) in SUBGROUPS.items():
        v = frame[col].to_numpy(dtype=float)
        op, thr = rule[:2], float(rule[2:])
        m = (v == thr) if op == "==" else (v >= thr)
        out[(var, yes)] = m
        out[(var, no)] = ~m
    return out


def read_raw(path: str | os.PathLike) -> pd.DataFrame:
    """Read the ``bp_ghana`` table from the ``.rda`` file with pyreadr; check its columns."""
    import pyreadr

    path = Path(path)
    if not path.is_file():
        raise TrialDataError(f"{path}: TASSH data file not found (run the tassh_fetch rule, or see "
                             f"data/README.md)")
    res = pyreadr.read_r(str(path))
    if OBJECT not in res:
        raise TrialDataError(f"{path}: no R object '{OBJECT}' (found {list(res)})")
    raw = res[OBJECT]
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise TrialDataError(f"{path}: column(s) {missing} missing from '{OBJECT}'")
    return raw


def _one_row_per_patient(raw: pd.DataFrame) -> pd.DataFrame:
    bad_visit = ~raw["Time_Elapsed"].isin(VISITS)
    if bad_visit.any():
        vals = sorted(map(str, raw.loc[bad_visit, "Time_Elapsed"].unique()[:5]))
        raise TrialDataError(f"{NAME}: column 'Time_Elapsed' has unknown visit(s) {vals}; expected {VISITS}")
    dup = raw.duplicated(["ID", "Time_Elapsed"], keep=False)
    if dup.any():
        ids = sorted(map(str, raw.loc[dup, "ID"].unique()[:5]))
        raise TrialDataError(f"{NAME}: patient(s) {ids} have more than one row for the same visit")
    nun = raw.groupby("ID", sort=True)[list(PATIENT_COLUMNS)].nunique(dropna=False)
    varying = nun.columns[(nun > 1).any()].tolist()
    if varying:
        col = varying[0]
        ids = nun.index[nun[col] > 1][:5].tolist()
        raise TrialDataError(
            f"{NAME}: column '{col}' differs between the visits of patient(s) {ids}; "
            "patient-level columns must be constant within a patient")
    pat = raw.drop_duplicates("ID").set_index("ID").sort_index()[list(PATIENT_COLUMNS)]
    sbp = raw.pivot(index="ID", columns="Time_Elapsed", values="SBP").reindex(pat.index)
    pat = pat.assign(sbp_baseline=sbp.get("Baseline"), sbp_12m=sbp.get("12Months"))
    return pat


def _check_sites(pat: pd.DataFrame) -> None:
    """Treatment and site columns constant within site; raise naming the site."""
    for col in SITE_COLUMNS:
        nun = pat.groupby("SiteNumber")[col].nunique(dropna=False)
        bad = nun.index[nun > 1].tolist()
        if bad:
            what = "treatment ('TrtorCtrl')" if col == "TrtorCtrl" else f"site column '{col}'"
            raise TrialDataError(
                f"{NAME}: {what} varies within site(s) {bad} (SiteNumber); in this cluster-randomized "
                "trial it must be constant within a site")
    arms = pat["TrtorCtrl"]
    if not arms.isin([0, 1]).all():
        raise TrialDataError(f"{NAME}: column 'TrtorCtrl' must be 0/1; found {sorted(arms.unique())}")


def _counts(step: str, pat: pd.DataFrame, excluded: int | None) -> dict:
    t = pat["TrtorCtrl"].to_numpy()
    return {"step": step, "excluded": excluded, "patients": len(pat),
            "control": int(np.sum(t == 0)), "intervention": int(np.sum(t == 1)),
            "sites": int(pat["SiteNumber"].nunique())}


def _impute(frame: pd.DataFrame, col: str, min_missing: int) -> list[str]:
    """Mean-impute ``col`` in place; add ``<col>_missing`` when at least ``min_missing`` values were
    missing. Return the added column names."""
    na = frame[col].isna()
    if not na.any():
        return []
    if na.all():
        raise TrialDataError(f"{NAME}: covariate '{col}' is missing for every patient in the analysis sample")
    frame[col] = frame[col].fillna(frame[col].mean())
    if na.sum() < max(int(min_missing), 1):
        return []
    frame[f"{col}_missing"] = na.astype(float)
    return [f"{col}_missing"]


def clean(raw: pd.DataFrame, min_missing_indicator: int = MIN_MISSING_INDICATOR) -> tuple[TrialData, pd.DataFrame]:
    """Analysis table and CONSORT-style exclusion table from the raw long ``bp_ghana`` table.

    ``min_missing_indicator``: fewest missing values of a covariate that earn it a missingness
    indicator (see the module docstring, step 4).

    Returns
    -------
    trial : :class:`TrialData`, design ``"crt"``, one row per complete-case patient, sorted by site
        and patient ID; ``outcome`` = SBP(12 months) - SBP(baseline).
    exclusions : one row per step (``step``, ``excluded``, ``patients``, ``control``,
        ``intervention``, ``sites``): the enrolled patients, each exclusion with the number of
        patients it removed, and the analysis sample. ``patients`` of the first row minus the sum
        of ``excluded`` equals ``patients`` of the last row.
    """
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise TrialDataError(f"{NAME}: column(s) {missing} missing from the raw table")
    pat = _one_row_per_patient(raw)
    _check_sites(pat)
    enrolled = pat.groupby("SiteNumber").size()

    rows = [_counts("enrolled (randomized)", pat, None)]
    for step, col in (("missing baseline SBP", "sbp_baseline"), ("missing 12-month SBP", "sbp_12m")):
        drop = pat[col].isna()
        pat = pat.loc[~drop]
        rows.append(_counts(step, pat, int(drop.sum())))
    rows.append(_counts("analysis sample (complete cases)", pat, None))
    exclusions = pd.DataFrame(rows)
    exclusions["excluded"] = exclusions["excluded"].astype("Int64")

    edu = pat["EducationLevel"].astype(str)
    unknown = sorted(set(edu.unique()) - set(EDUCATION_LEVELS) - {"999"})
    if unknown:
        raise TrialDataError(f"{NAME}: column 'EducationLevel' has unknown level(s) {unknown}")
    edu_code = edu.map({lvl: float(i) for i, lvl in enumerate(EDUCATION_LEVELS)})
    smoking = pat["Smoking"].to_numpy(dtype=float)
    bad_smk = ~np.isin(smoking, [0, 1, 2, 3, 4])
    if bad_smk.any():
        raise TrialDataError(f"{NAME}: column 'Smoking' has code(s) {sorted(set(smoking[bad_smk]))}; expected 0-4")

    f = pd.DataFrame({
        "cluster": pat["SiteNumber"].to_numpy(dtype=np.int64),
        "treatment": pat["TrtorCtrl"].to_numpy(dtype=float),
        "outcome": (pat["sbp_12m"] - pat["sbp_baseline"]).to_numpy(dtype=float),
        "age": pat["Age"].astype(float).where(pat["Age"] != 0).to_numpy(),
        "female": pat["Gender"].to_numpy(dtype=float),
        "sbp_baseline": pat["sbp_baseline"].to_numpy(dtype=float),
        "bmi": pat["BMI"].astype(float).where(pat["BMI"] != 0).to_numpy(),
        "literate": pat["Literacy"].to_numpy(dtype=float),
        "employed": pat["EmploymentStatus"].astype(float).where(pat["EmploymentStatus"] != 999).to_numpy(),
        "smoker": (smoking != NEVER_SMOKED).astype(float),
        "education": edu_code.to_numpy(dtype=float),
        "physical_activity": pat["PhysicalActivity"].to_numpy(dtype=float),
        "rural_urban": pat["RuralUrban"].to_numpy(dtype=float),
        "doctors": pat["DoctorsAvailable"].to_numpy(dtype=float),
        "nurses": pat["NursesAvailable"].to_numpy(dtype=float),
        "patients_per_year": pat["Patientsannually"].to_numpy(dtype=float),
        "cluster_size": enrolled.reindex(pat["SiteNumber"]).to_numpy(dtype=float),
    })
    order = np.lexsort((pat.index.to_numpy(dtype=str), f["cluster"].to_numpy()))
    f = f.iloc[order].reset_index(drop=True)

    individual = []
    for col in INDIVIDUAL:
        individual.append(col)
        individual += _impute(f, col, min_missing_indicator)
    f = f[["cluster", "treatment", "outcome"] + individual + list(CLUSTER)]
    trial = TrialData(f, "crt", tuple(individual), CLUSTER, (), name=NAME,
                      extra={"larger_is_better": LARGER_IS_BETTER, "patient_id": pat.index.to_numpy(dtype=str)[order]})
    return trial.validate(), exclusions
