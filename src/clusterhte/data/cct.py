"""The Colombia conditional-cash-transfer (CCT) trial: reading, cleaning, analysis table.

Data: Barrera-Osorio, Bertrand, Linden & Perez-Calle (2011, AEJ: Applied), openICPSR E113783V1,
file ``Public_Data_AEJApp_2010-0132.dta``. Analysis sample of Suk & Park (2023, Psychometrika,
Section 6): the San Cristóbal experiment, any CCT (basic or savings arm) versus control, outcome the
monitored school attendance rate ``at_msamean``, students nested in schools (a multisite trial).
The paper reports 3,872 students in 26 schools.

The cleaning follows the authors' R script ``CCTdata/CCTdataAnalysisCodes.R``
(github.com/youmisuk/multisiteOTR) step by step (spec ``otr_multisite.md`` §4.1):

1. ``s_sexo`` → 0 where its label is ``"0"`` (the unlabelled code 0), else 1 (code 1 is "Hombre").
2. San Cristóbal: ``suba == 0 & (control == 1 | treatment == 1)``; ``trt = treatment`` (pooled
   basic + savings arms).
3. ``caseID`` = 10000, 10001, … in row order of that subset.
4. SISBEN duplicates: among rows with a missing household id ``fu_nim_hogar``, every member of a
   group of rows identical on the 13 SISBEN variables (:data:`SISBEN_KEYS`) is dropped.
5. Households with more than one registered student (a household id occurring more than once in
   the step-2 subset) are dropped; missing household ids are kept.
6. Schools with at most one registered student, counted in the step-2 subset, are dropped (and rows
   without a school code).
7. Only students in the attendance survey (``survey_selected == 1``) are kept.

Steps 4–7 are one logical mask on the step-2 subset, exactly as in the R script: the household and
school counts are taken *before* the other exclusions, so a school left with one student after the
other filters is kept. :func:`clean` reports each step's own removal count and the sequential count.

Step 4 of the R script has a row-order bug: it finds the duplicated rows in a *keyed* (hence
sorted) ``data.table`` and uses their row numbers to index the *unsorted* rows. The number of rows
dropped is right, the caseIDs are not (unless the data happen to be sorted). ``clean`` drops the
true duplicates by default; ``reference_row_order=True`` reproduces the R behaviour (needed for the
published sample).

Recodes (step 9): ``inc_380 = 1{s_ingtotal ≤ 380}`` (income in thousands of pesos),
``s_estcivil`` → 1 if "Single" else 0, ``s_estrato`` and ``grade`` → factors of the values present
(R ``factor()``), ``s_teneviv`` stays a factor with all four codebook levels.

Differences from the R original:

- The file is read with pyreadstat instead of ``readstata13::read.dta13(generate.factors = TRUE,
  nonint.factors = TRUE)``; :func:`read_raw` rebuilds the same factors (all codebook labels as
  levels in code order, unlabelled codes as their digits).
- A missing ``survey_selected`` counts as "not in the survey" (R would produce an all-NA row).
- Missing values in the 20 covariates raise an error naming the rows in :func:`to_trial`; R's
  ``model.matrix`` would silently drop those rows and the script would then fail on length
  mismatches.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from clusterhte.data.trial import TrialData, TrialDataError, _rows

# The 13 SISBEN household variables used to detect students of the same household among rows with
# a missing household id (paper footnote 5; "s_tperso" there is the codebook's s_tpersona).
SISBEN_KEYS = ("s_durables", "s_edadhead", "s_estcivil", "s_estrato", "s_infraest_hh", "s_ingtotal",
               "s_num18", "s_puntaje", "s_single", "s_tpersona", "s_teneviv", "s_utilities",
               "s_yrshead")

# The 20 pre-treatment covariates (``covmat_aug`` of the R script), in the script's order.
COVARIATES = ("s_teneviv", "s_utilities", "s_durables", "s_infraest_hh", "s_age_sorteo",
              "s_years_back", "s_sexo", "s_estcivil", "s_single", "s_edadhead", "s_yrs", "s_yrshead",
              "s_tpersona", "s_num18", "s_estrato", "inc_380", "s_puntaje", "s_ingtotal", "grade",
              "s_over_age")

# Terms of the moderator matrix ``covmat = model.matrix(~ s_teneviv + s_years_back + grade +
# s_estrato + inc_380)[, -1]``.
MODERATOR_TERMS = ("s_teneviv", "s_years_back", "grade", "s_estrato", "inc_380")

# Covariates entered as factors (treatment contrasts, first level the reference).
FACTORS = ("s_teneviv", "s_estrato", "grade")

OUTCOME = "at_msamean"
CLUSTER = "school_code"
HOUSEHOLD = "fu_nim_hogar"

# Value labels of the labelled variables the cleaning depends on (Stata code -> label). The
# s_estcivil labels are those of the spec (§4.1 step 9); the s_teneviv and s_sexo label *texts* are
# not documented there and only name the dummies (to_trial takes the names from the data, so a file
# with other texts still works). s_sexo's code 0 has no label, as the R recode ``s_sexo == "0"``
# implies.
VALUE_LABELS = {
    "s_teneviv": {1: "Rent", 2: "Own paying it", 3: "Own payed", 4: "Other condition"},
    "s_estcivil": {1: "Free union", 2: "Married", 3: "Widow(er)", 4: "Divorced", 5: "Single"},
    "s_sexo": {1: "Hombre", 2: "Mujer"},
}

# Every column of the codebook that :func:`clean` and :func:`to_trial` read.
REQUIRED_COLUMNS = tuple(dict.fromkeys(
    ("suba", "control", "treatment", CLUSTER, HOUSEHOLD, "survey_selected", OUTCOME, "s_sexo")
    + SISBEN_KEYS + tuple(c for c in COVARIATES if c != "inc_380")))


def _dummy_name(var: str, level) -> str:
    """R's model.matrix column name ``paste0(var, level)`` with spaces replaced by '.'."""
    return f"{var}{_level_str(level)}".replace(" ", ".")


def _level_str(level) -> str:
    """A factor level as R prints it: integral numbers without a decimal point."""
    if isinstance(level, (float, np.floating)) and float(level).is_integer():
        return str(int(level))
    return str(level)


# The moderator columns penalised by the lasso of the weighting estimators in the CCT analysis:
# the three s_teneviv dummies (penalty factor c(0, rep(1, 3), rep(0, 9)) of the R script, whose
# leading 0 is the treatment main effect). Use as the ``penalized_moderators`` hyperparameter.
W_PENALIZED_MODERATORS = tuple(_dummy_name("s_teneviv", lab)
                               for lab in list(VALUE_LABELS["s_teneviv"].values())[1:])


# ----------------------------------------------------------------------------------- reading
def read_raw(path: str | os.PathLike) -> pd.DataFrame:
    """Read the trial's Stata file with value labels applied as pandas categoricals.

    Labelled variables become categoricals whose categories are *all* labels of the variable's
    label set plus any unlabelled codes present (as their digits, e.g. ``"0"``), ordered by Stata
    code -- the factors ``readstata13::read.dta13(generate.factors = TRUE, nonint.factors = TRUE)``
    builds, so that sorting by category code equals R's sorting by factor level. Raises
    :class:`TrialDataError` naming the file and every missing required column.
    """
    import pyreadstat

    path = Path(path)
    if not path.is_file():
        raise TrialDataError(f"{path}: CCT data file not found (download Public_Data_AEJApp_2010-0132.dta "
                             "from openICPSR E113783V1, see data/README.md)")
    try:
        raw, meta = pyreadstat.read_dta(str(path), apply_value_formats=True, formats_as_category=True)
    except Exception as e:  # pyreadstat raises its own error types for non-Stata files
        raise TrialDataError(f"{path}: not a readable Stata .dta file ({type(e).__name__}: {e})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise TrialDataError(f"{path}: missing required column(s) {missing} of the CCT codebook")
    for col, labels in meta.variable_value_labels.items():
        if col in raw.columns and isinstance(raw[col].dtype, pd.CategoricalDtype):
            raw[col] = _code_ordered_factor(raw[col], labels)
    return raw


def _code_ordered_factor(s: pd.Series, labels: dict) -> pd.Series:
    """Labelled values (labels, or unlabelled codes as numbers) -> the R factor of readstata13."""
    lab = {str(v) for v in labels.values()}
    obj = s.astype(object)
    to_str = {v: (str(v) if str(v) in lab else _level_str(float(v)) if is_number(v) else str(v))
              for v in pd.unique(obj.dropna())}
    return pd.Series(_labelled_categorical(obj.map(to_str), labels), index=s.index, name=s.name)


def factor_from_codes(codes, labels: dict) -> pd.Categorical:
    """Stata codes -> the categorical :func:`read_raw` returns (labels applied, all labels as levels)."""
    codes = pd.Series(np.asarray(codes, dtype=float))
    to_str = {c: str(labels[c]) if c in labels else _level_str(c) for c in codes.dropna().unique()}
    return _labelled_categorical(codes.map(to_str), labels)


def _labelled_categorical(values: pd.Series, labels: dict) -> pd.Categorical:
    """Categorical of label strings with every label of ``labels`` plus the unlabelled codes present,
    ordered by Stata code (R: ``sort(c(unlabelled, labtable))``)."""
    entries = {str(v): float(k) for k, v in labels.items()}
    for v in pd.unique(values.dropna()):
        if v not in entries:
            entries[v] = float(v) if is_number(v) else np.inf
    cats = sorted(entries, key=lambda c: (entries[c], c))
    return pd.Categorical(values, categories=cats)


def category_codes(s: pd.Series, labels: dict) -> np.ndarray:
    """Inverse of :func:`factor_from_codes`: Stata codes (float, NaN for missing) of a labelled column."""
    by_label = {str(v): float(k) for k, v in labels.items()}
    obj = s.astype(object)
    to_code = {v: by_label.get(str(v), float(v) if is_number(v) else np.nan) for v in pd.unique(obj.dropna())}
    return obj.map(to_code).to_numpy(dtype=float, na_value=np.nan)


def is_number(v) -> bool:
    """Whether ``v`` converts to a float (a code rather than a label)."""
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------------- cleaning
def _sort_codes(s: pd.Series) -> np.ndarray:
    """Float sort keys: category codes for factors (R sorts factors by level code), else values."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        c = s.cat.codes.to_numpy().astype(float)
        c[c < 0] = np.nan
        return c
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def sisben_duplicate_caseids(na_rows: pd.DataFrame, reference_row_order: bool = False) -> np.ndarray:
    """caseIDs dropped as SISBEN duplicates among rows with a missing household id.

    ``na_rows``: the rows of the San Cristóbal subset with a missing household id, in their
    original order, with ``caseID`` and the 13 :data:`SISBEN_KEYS`. A *duplicate group* is a set of
    two or more rows identical on all 13 keys (missing equals missing); every member is dropped.

    ``reference_row_order=True`` reproduces the R script: the rows are stably sorted by the 13 keys
    (ascending, missing first, factors by level code) as ``data.table``'s ``setkey`` does, the
    positions of the duplicate-group rows in that sorted order are taken, and the caseIDs at those
    positions of the *unsorted* rows are returned. The count is the same; the caseIDs usually differ.
    """
    keys = list(SISBEN_KEYS)
    missing = [k for k in keys + ["caseID"] if k not in na_rows.columns]
    if missing:
        raise TrialDataError(f"SISBEN duplicate check: missing column(s) {missing}")
    case = na_rows["caseID"].to_numpy()
    if len(na_rows) == 0:
        return case[:0]
    codes = np.column_stack([_sort_codes(na_rows[k]) for k in keys])
    # duplicate groups (NaN == NaN, as data.table's duplicated/join treat NA)
    dup = pd.DataFrame(codes).duplicated(keep=False).to_numpy()
    if not reference_row_order:
        return case[dup]
    isna = np.isnan(codes)
    filled = np.where(isna, 0.0, codes)
    sort_keys = []
    for j in reversed(range(len(keys))):  # np.lexsort: the last key is the primary one
        sort_keys += [filled[:, j], ~isna[:, j]]  # missing first, then ascending values
    order = np.lexsort(sort_keys)
    positions = np.flatnonzero(dup[order])
    return case[positions]


def _as_flag(s: pd.Series, value: float) -> np.ndarray:
    """Boolean ``s == value`` with missing -> False (numeric or numeric-like categorical)."""
    v = pd.to_numeric(s.astype(object) if isinstance(s.dtype, pd.CategoricalDtype) else s, errors="coerce")
    return (v.to_numpy(dtype=float, na_value=np.nan) == value)


def clean(raw: pd.DataFrame, reference_row_order: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The analysis sample of Suk & Park (2023, Section 6.1) and the exclusion table.

    Parameters
    ----------
    raw : the trial file as read by :func:`read_raw` (labelled variables as categoricals;
        ``s_teneviv`` and ``s_estcivil`` may also be bare Stata codes, read with :data:`VALUE_LABELS`).
    reference_row_order : emulate the R script's row-index bug in the SISBEN duplicate step
        (module docstring, step 4); ``False`` drops the true duplicates.

    Returns
    -------
    frame : the kept students in file order, all raw columns plus ``trt``, ``caseID``, ``inc_380``,
        with ``s_sexo`` and ``s_estcivil`` recoded to 0/1 and ``s_estrato``, ``grade`` as factors.
    exclusions : one row per step: ``step``, ``rule``, ``removed`` (rows the step's own criterion
        removes from the step-2 subset; for step 2, from the file), ``removed_sequential`` (rows it
        removes after the earlier steps), ``rows_left`` and ``schools_left`` (after the step, applied
        in order).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise TrialDataError(f"CCT raw table: missing required column(s) {missing}")
    dat = raw.copy()
    n_raw = len(dat)
    # labelled variables given as bare Stata codes (a file read without value labels): same factors
    for col in ("s_teneviv", "s_estcivil"):
        s = dat[col]
        if not isinstance(s.dtype, pd.CategoricalDtype) and pd.api.types.is_numeric_dtype(s):
            dat[col] = factor_from_codes(s.to_numpy(dtype=float, na_value=np.nan), VALUE_LABELS[col])

    # step 1: s_sexo == "0" -> 0 else 1 (missing stays missing)
    sex = dat["s_sexo"].astype(object)
    zero = {v: (_level_str(float(v)) if is_number(v) else str(v)) == "0" for v in pd.unique(sex.dropna())}
    is0 = sex.map(zero).fillna(False).to_numpy(dtype=bool)
    dat["s_sexo"] = np.where(sex.isna().to_numpy(), np.nan, np.where(is0, 0.0, 1.0))

    # step 2: San Cristóbal, control or any CCT; trt = treatment
    keep = _as_flag(dat["suba"], 0) & (_as_flag(dat["control"], 1) | _as_flag(dat["treatment"], 1))
    san = dat.loc[keep].reset_index(drop=True)
    san["trt"] = pd.to_numeric(san["treatment"].astype(object), errors="coerce").astype(float)
    # step 3
    san["caseID"] = np.arange(10000, 10000 + len(san), dtype=np.int64)

    # step 4: SISBEN duplicates among missing household ids
    hh = pd.to_numeric(san[HOUSEHOLD].astype(object), errors="coerce")
    na_rows = san.loc[hh.isna().to_numpy()]
    dup_ids = sisben_duplicate_caseids(na_rows, reference_row_order)
    ok_dup = ~np.isin(san["caseID"].to_numpy(), dup_ids)
    # step 5: households with more than one registered student (counted in the subset)
    counts = hh.value_counts()
    multi = counts.index[counts.to_numpy() > 1]
    ok_hh = ~hh.isin(multi).to_numpy()
    # step 6: schools with more than one registered student (counted in the subset)
    sch = san[CLUSTER]
    sc = sch.value_counts(dropna=True)
    ok_sch = (sch.isin(sc.index[sc.to_numpy() > 1]) & sch.notna()).to_numpy()
    # step 7: attendance survey
    ok_survey = _as_flag(san["survey_selected"], 1)

    steps = [
        (4, "SISBEN duplicates among students with a missing household id (every group member)", ok_dup),
        (5, "households with more than one registered student (counted before other exclusions)", ok_hh),
        (6, "schools with one registered student or no school code (counted before other exclusions)",
         ok_sch),
        (7, "not in the attendance survey (survey_selected != 1)", ok_survey),
    ]
    n_schools = lambda m: int(sch[m].nunique())  # noqa: E731
    rows = [dict(step=0, rule="raw file", removed=0, removed_sequential=0, rows_left=n_raw,
                 schools_left=int(dat[CLUSTER].nunique())),
            dict(step=2, rule="San Cristóbal (suba == 0), control or CCT (basic or savings)",
                 removed=n_raw - len(san), removed_sequential=n_raw - len(san), rows_left=len(san),
                 schools_left=n_schools(np.ones(len(san), bool)))]
    alive = np.ones(len(san), bool)
    for step, rule, ok in steps:
        new = alive & ok
        rows.append(dict(step=step, rule=rule, removed=int((~ok).sum()),
                         removed_sequential=int((alive & ~ok).sum()), rows_left=int(new.sum()),
                         schools_left=n_schools(new)))
        alive = new
    exclusions = pd.DataFrame(rows)

    df = san.loc[alive].reset_index(drop=True)
    # step 9: recodes
    inc = pd.to_numeric(df["s_ingtotal"].astype(object), errors="coerce").to_numpy(dtype=float)
    df["inc_380"] = np.where(np.isnan(inc), np.nan, (inc <= 380).astype(float))
    ec = df["s_estcivil"]
    df["s_estcivil"] = np.where(ec.isna(), np.nan, (ec.astype(object).astype(str) == "Single").astype(float))
    df["s_estrato"] = _r_factor(df["s_estrato"])
    df["grade"] = _r_factor(df["grade"])
    return df, exclusions


def _r_factor(s: pd.Series) -> pd.Series:
    """R ``factor(x)``: levels are the values present (numeric order for numbers, else kept order)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s.cat.remove_unused_categories()
    v = pd.to_numeric(s, errors="coerce")
    levels = np.sort(v.dropna().unique())
    return pd.Series(pd.Categorical(v, categories=levels), index=s.index, name=s.name)


def school_treated_shares(frame: pd.DataFrame) -> pd.DataFrame:
    """Per school: students, treated students and the treated share (the R ``trt_prop_sch``)."""
    cl = CLUSTER if CLUSTER in frame.columns else "cluster"
    tr = "trt" if "trt" in frame.columns else "treatment"
    for c in (cl, tr):
        if c not in frame.columns:
            raise TrialDataError(f"treated shares: column '{c}' not found; columns are {list(frame.columns)}")
    g = frame.groupby(cl, sort=True, observed=True)[tr]
    out = pd.DataFrame({"n": g.size(), "n_treated": g.sum()}).reset_index().rename(columns={cl: "school"})
    out["share"] = out["n_treated"] / out["n"]
    return out


# ----------------------------------------------------------------------------------- analysis table
def design_matrix(frame: pd.DataFrame, terms=COVARIATES) -> pd.DataFrame:
    """R ``model.matrix(~ terms, frame)[, -1]``: numbers as is, factors as treatment-contrast dummies.

    Factor columns (:data:`FACTORS` or any categorical) give one 0/1 column per non-reference level,
    named ``var`` + level with spaces replaced by '.' (e.g. ``s_tenevivOwn.paying.it``, ``grade7``).
    """
    cols = {}
    for t in terms:
        if t not in frame.columns:
            raise TrialDataError(f"CCT design matrix: column '{t}' not found")
        s = frame[t]
        if t in FACTORS or isinstance(s.dtype, pd.CategoricalDtype):
            s = s if isinstance(s.dtype, pd.CategoricalDtype) else _r_factor(s)
            if s.isna().any():
                raise TrialDataError(f"CCT: factor '{t}' has missing values at {_rows(s.isna().to_numpy())}")
            codes = s.cat.codes.to_numpy()
            for k, lev in enumerate(s.cat.categories[1:], start=1):
                cols[_dummy_name(t, lev)] = (codes == k).astype(float)
        else:
            v = pd.to_numeric(s.astype(object) if s.dtype == object else s, errors="coerce")
            v = v.to_numpy(dtype=float, na_value=np.nan)
            if np.isnan(v).any():
                raise TrialDataError(f"CCT: covariate '{t}' has missing or non-numeric values at "
                                     f"{_rows(np.isnan(v))}")
            cols[t] = v
    return pd.DataFrame(cols, index=frame.index)


def to_trial(frame: pd.DataFrame, name: str = "cct") -> TrialData:
    """The cleaned CCT frame as a multisite :class:`TrialData`.

    cluster = ``school_code``, treatment = ``trt``, outcome = ``at_msamean``; covariates = the 20
    covariates dummy-expanded in the R script's order (27 columns with the codebook's levels);
    moderators = the 12 columns of ``covmat`` (3 s_teneviv dummies, s_years_back, 5 grade dummies,
    2 s_estrato dummies, inc_380 with the published sample's levels).
    """
    for c in (CLUSTER, "trt", OUTCOME):
        if c not in frame.columns:
            raise TrialDataError(f"{name}: column '{c}' not found; run clusterhte.data.cct.clean first")
    X = design_matrix(frame, COVARIATES)
    M = design_matrix(frame, MODERATOR_TERMS)
    cl = pd.to_numeric(frame[CLUSTER].astype(object), errors="coerce")
    if cl.isna().any():
        raise TrialDataError(f"{name}: column '{CLUSTER}' has missing values at {_rows(cl.isna().to_numpy())}")
    clv = cl.to_numpy(dtype=float)
    cluster = clv.astype(np.int64) if np.all(clv == np.round(clv)) else clv
    f = pd.DataFrame({"cluster": cluster,
                      "treatment": pd.to_numeric(frame["trt"].astype(object), errors="coerce").to_numpy(float),
                      "outcome": pd.to_numeric(frame[OUTCOME], errors="coerce").to_numpy(float)})
    f = pd.concat([f, X.reset_index(drop=True)], axis=1)
    td = TrialData(f, "multisite", tuple(X.columns), (), tuple(M.columns), name=name,
                   extra={"penalized_moderators": [c for c in M.columns if c.startswith("s_teneviv")]})
    return td.validate()


def grade_of(frame: pd.DataFrame) -> np.ndarray:
    """School grade (6-11) of each student of an analysis table, from its grade dummies
    (``grade7`` ... ``grade11``; grade 6 is the reference level)."""
    cols = [c for c in frame.columns if c.startswith("grade") and c[5:].isdigit()]
    if not cols:
        raise TrialDataError("no grade dummy columns (grade7 ... grade11) in the CCT analysis table")
    levels = np.array([int(c[5:]) for c in cols])
    D = frame[cols].to_numpy(dtype=float)
    return np.where(D.sum(axis=1) > 0, levels[np.argmax(D, axis=1)], levels.min() - 1).astype(int)


__all__ = ["grade_of", "COVARIATES", "FACTORS", "MODERATOR_TERMS", "REQUIRED_COLUMNS", "SISBEN_KEYS", "VALUE_LABELS",
           "W_PENALIZED_MODERATORS", "category_codes", "clean", "design_matrix", "factor_from_codes",
           "read_raw", "school_treated_shares", "sisben_duplicate_caseids", "to_trial"]
