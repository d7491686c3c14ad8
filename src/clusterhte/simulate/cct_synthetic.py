"""A synthetic stand-in for the Colombia CCT trial file (``Public_Data_AEJApp_2010-0132.dta``).

The trial's data are distributed by openICPSR (E113783V1) under terms that forbid redistribution,
so the workflow runs end to end on this stand-in when the real file is absent. It has every
codebook column :func:`clusterhte.data.cct.clean` reads, with the real file's types and labels
(``s_teneviv``, ``s_estcivil`` and ``s_sexo`` labelled, ``s_estrato`` and ``s_tpersona`` integer,
the rest double) and the features the cleaning must handle:

- San Cristóbal registrants (``suba == 0``) in ~48 schools plus Suba registrants (``suba == 1``,
  grades 9–11) that step 2 excludes; two San Cristóbal rows without a school code;
- households of 1–3 registered siblings; about half of the households have a missing household id
  ``fu_nim_hogar``, and their siblings form SISBEN duplicate groups (pairs and triples) because the
  13 SISBEN variables are household-level; siblings with an observed id share it;
- six single-registrant schools; ~30 attendance-survey schools (``survey_selected``, some only
  partly surveyed) and ~14 schools outside the survey, whose ``at_msamean`` is missing (attendance was monitored only
  in the survey).

Treatment (``treatment``, any CCT; ``control = 1 − treatment``; ``T1_treat``/``T2_treat`` split
the treated evenly) is drawn per student with a school-specific probability, logit p_j =
logit(0.63) + N(0, 0.2²), matching the published average 0.63 and school range ≈ 0.57–0.72.

Outcome, for surveyed students (missing for the others): the share of ``m_i`` monitored visits attended,
``at_msamean = (1 − D_i)·Binomial(m_i, expit(η_i + T_i·τ_i))/m_i`` with dropout D_i ~
Bernoulli(π_i), school random intercept b_j ~ N(0, 0.7²) in η_i (outcome ICC ≈ 0.05, the paper's
estimate for the trial) and the CCT effect on the logit scale

    τ_i = −0.15 + 0.45·1{s_ingtotal ≤ 380} + g(grade) + c_j,   g = (0.25, 0, −0.1, 0.2, 0, 0.25)
    for grades 6..11, school random slope c_j ~ N(0, 0.1²),

so that low-income students and grades 6, 9, 11 benefit most (the pattern of the paper's Figures
8–9) and high-income students in grades 7, 8, 10 do not. The true conditional effect on expected
attendance, (1 − π_i)(expit(η_i + τ_i) − expit(η_i)), is stored in ``syn_cate`` (``syn_tau_logit``
holds τ_i) for checking estimators; neither column is in the codebook.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from clusterhte import seeds
from clusterhte.data import cct

_GRADE_P = np.array([2422, 2153, 1985, 1800, 1545, 1002], float)  # San Cristóbal registrants by grade
_GRADE_EFFECT = np.array([0.25, 0.0, -0.1, 0.2, 0.0, 0.25])  # g(grade) for grades 6..11
_COLUMN_LABELS = {
    "s_estrato": "Stratum", "s_teneviv": "House possession", "s_tpersona": "Number of people in the household",
    "s_estcivil": "Marital status", "s_sexo": "Gender", "s_puntaje": "SISBEN score",
    "s_single": "Single Parent Household", "s_edadhead": "Age of Jefe del Hogar",
    "s_num18": "Number of kids 18 and under", "s_yrs": "Years of Education",
    "s_yrshead": "Years of Education Jefe", "s_ingtotal": "Household Income",
    "grade": "Current grade of student",
    "survey_selected": "== 1 if student was selected for surveying and attendance",
    "at_msamean": "attendance rate when attendance taken at school-jornada",
    "school_code": "group(school_code)", "fu_nim_hogar": "group(fu_nim_hogar)",
    "syn_cate": "SYNTHETIC: true CCT effect on expected attendance",
    "syn_tau_logit": "SYNTHETIC: true CCT effect on the logit scale",
}
_INT_COLUMNS = ("s_estrato", "s_tpersona")


def _households(rng: np.random.Generator, n_students: int) -> tuple[np.ndarray, np.ndarray]:
    """Household index of each of about ``n_students`` students and the households' sizes."""
    n_h = int(n_students / 1.27)
    size = rng.choice([1, 2, 3], size=n_h, p=[0.76, 0.21, 0.03])
    return np.repeat(np.arange(n_h), size), size


def _household_table(rng: np.random.Generator, n_h: int) -> dict[str, np.ndarray]:
    """The 13 SISBEN household variables (codes for the labelled ones)."""
    tpersona = np.clip(rng.poisson(4.4, n_h) + 1, 1, 22)
    num18 = np.clip(np.minimum(rng.poisson(2.5, n_h), tpersona - 1), 0, 12)
    return {
        "s_durables": np.clip(rng.poisson(1.35, n_h), 0, 4).astype(float),
        "s_edadhead": np.clip(np.round(rng.normal(46, 10, n_h)), 19, 98),
        "s_estcivil": rng.choice([1, 2, 3, 4, 5], size=n_h, p=[0.012, 0.006, 0.001, 0.004, 0.977]).astype(float),
        "s_estrato": rng.choice([0, 1, 2], size=n_h, p=[0.22, 0.12, 0.66]),
        "s_infraest_hh": np.clip(np.round(rng.normal(11.65, 1.75, n_h)), 3, 19),
        "s_ingtotal": np.clip(np.round(rng.gamma(2.4, 152.0, n_h)), 0, 4000),
        "s_num18": num18.astype(float),
        "s_puntaje": np.round(np.clip(rng.normal(11.7, 4.6, n_h), 1.45, 21.99), 2),
        "s_single": rng.binomial(1, 0.29, n_h).astype(float),
        "s_tpersona": tpersona.astype(np.int64),
        "s_teneviv": rng.choice([1, 2, 3, 4], size=n_h, p=[0.55, 0.09, 0.27, 0.09]).astype(float),
        "s_utilities": np.clip(np.round(rng.normal(4.7, 1.4, n_h)), 1, 6),
        "s_yrshead": np.clip(np.round(rng.normal(5.6, 2.9, n_h)), 0, 22),
    }


def _locality(rng: np.random.Generator, school_codes: np.ndarray, school_w: np.ndarray, n_students: int,
              grades: tuple[int, ...], hh_offset: int, observed_id: float = 0.52) -> pd.DataFrame:
    """Students of one locality: households, schools (siblings mostly share a school), covariates."""
    hh, size = _households(rng, n_students)
    n, n_h = hh.size, size.size
    first = np.r_[True, hh[1:] != hh[:-1]]
    p_school = school_w / school_w.sum()
    school_idx = rng.choice(school_codes.size, size=n, p=p_school)
    # siblings: same school as the first child with probability 0.8
    first_school = school_idx[np.flatnonzero(first)][hh]
    same = rng.random(n) < 0.8
    school_idx = np.where(first | ~same, school_idx, first_school)
    H = _household_table(rng, n_h)
    out = {k: v[hh] for k, v in H.items()}
    ids = np.full(n_h, np.nan)
    obs = rng.random(n_h) < observed_id
    ids[obs] = hh_offset + rng.permutation(int(obs.sum())) + 1
    out["fu_nim_hogar"] = ids[hh]
    gp = _GRADE_P[np.array(grades) - 6]
    grade = rng.choice(np.array(grades, float), size=n, p=gp / gp.sum())
    years_back = rng.choice([-3, -2, -1, 0, 1, 2, 3, 4], size=n,
                            p=[0.015, 0.195, 0.355, 0.205, 0.115, 0.05, 0.045, 0.02]).astype(float)
    out.update({
        "school_code": school_codes[school_idx].astype(float),
        "grade": grade,
        "s_years_back": years_back,
        "s_age_sorteo": grade + 6 + years_back,
        "s_over_age": (years_back >= 1).astype(float),
        "s_yrs": grade - rng.choice([2, 3, 1, 4], size=n, p=[0.40, 0.50, 0.07, 0.03]),
        "s_sexo": rng.binomial(1, 0.49, n).astype(float),
    })
    return pd.DataFrame(out)


def make_synthetic(seed: int = 0) -> pd.DataFrame:
    """A synthetic CCT trial table shaped like :func:`clusterhte.data.cct.read_raw`'s output.

    Deterministic given ``seed``; rows in random order (as in the real file, not sorted by the
    SISBEN variables, so that the reference row-order emulation of the cleaning matters).
    About 6,600 San Cristóbal and 600 Suba registrants; the cleaned sample has about 30 schools and
    2,500 students.
    """
    rng = seeds.rng(seed, "cct-synthetic")
    # San Cristóbal schools: 30 surveyed (8 of them partly), 14 outside the survey, 6 with one registrant
    codes = 1 + rng.permutation(160)
    surv, nons, ones = codes[:30], codes[30:44], codes[44:50]
    w_surv = np.exp(rng.normal(np.log(160), 0.45, surv.size))
    w_nons = np.exp(rng.normal(np.log(110), 0.45, nons.size))
    san_codes = np.r_[surv, nons]
    san_w = np.r_[w_surv, w_nons]
    san = _locality(rng, san_codes, san_w, int(san_w.sum()), (6, 7, 8, 9, 10, 11), hh_offset=0)
    # single-registrant schools and two rows without a school code: one-child households
    extra = _locality(rng, np.r_[ones, [0, 0]], np.ones(ones.size + 2), 40, (6, 7, 8, 9, 10, 11),
                      hh_offset=100000, observed_id=1.0)
    extra = extra.drop_duplicates("fu_nim_hogar").iloc[: ones.size + 2].copy()
    extra["school_code"] = np.r_[ones, [np.nan, np.nan]].astype(float)
    san = pd.concat([san, extra], ignore_index=True)
    san["suba"] = 0.0
    suba_codes = 200 + np.arange(10)
    suba = _locality(rng, suba_codes, np.ones(suba_codes.size), 600, (9, 10, 11), hh_offset=200000)
    suba["suba"] = 1.0
    df = pd.concat([san, suba], ignore_index=True)
    n = len(df)

    # survey selection: whole schools, 8 surveyed schools only partly
    sc = df["school_code"].to_numpy()
    p_sel = np.where(np.isin(sc, surv), 1.0, 0.0)
    for code, share in zip(surv[:8], rng.uniform(0.55, 0.9, 8)):
        p_sel[sc == code] = share
    p_sel[np.isin(sc, ones[:3])] = 1.0  # three of the one-registrant schools are surveyed
    p_sel[df["suba"].to_numpy() == 1] = 0.8
    survey = (rng.random(n) < p_sel).astype(float)

    # treatment: school-specific lottery probabilities
    all_codes = np.unique(df["school_code"].fillna(-1).to_numpy())
    pos = np.searchsorted(all_codes, df["school_code"].fillna(-1).to_numpy())
    logit_p = np.log(0.63 / 0.37) + rng.normal(0, 0.2, all_codes.size)
    trt = (rng.random(n) < 1 / (1 + np.exp(-logit_p[pos]))).astype(float)
    basic = rng.random(n) < 0.5

    # outcome
    b = rng.normal(0, 0.7, all_codes.size)[pos]
    c = rng.normal(0, 0.1, all_codes.size)[pos]
    grade = df["grade"].to_numpy()
    low = (df["s_ingtotal"].to_numpy() <= 380).astype(float)
    eta = (1.9 + b - 0.15 * df["s_sexo"].to_numpy() - 0.25 * df["s_over_age"].to_numpy()
           - 0.08 * (grade - 8) + 0.1 * (df["s_estrato"].to_numpy() == 2) - 0.1 * df["s_single"].to_numpy()
           + 0.02 * (df["s_puntaje"].to_numpy() - 11.7))
    tau = -0.15 + 0.45 * low + _GRADE_EFFECT[(grade - 6).astype(int)] + c
    pi_drop = 1 / (1 + np.exp(-(-2.6 + 0.3 * df["s_over_age"].to_numpy() + 0.15 * (grade - 8))))
    expit = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    m = rng.integers(8, 17, n)
    attended = rng.binomial(m, expit(eta + trt * tau)) / m
    dropped = rng.random(n) < pi_drop
    at = np.where(survey == 1, np.where(dropped, 0.0, attended), np.nan)

    df["treatment"] = trt
    df["control"] = 1.0 - trt
    df["T1_treat"] = trt * basic
    df["T2_treat"] = trt * ~basic
    df["survey_selected"] = survey
    df["at_msamean"] = at
    df["syn_tau_logit"] = tau
    df["syn_cate"] = (1 - pi_drop) * (expit(eta + tau) - expit(eta))

    df = df.iloc[rng.permutation(n)].reset_index(drop=True)
    for col, labels in cct.VALUE_LABELS.items():
        df[col] = cct.factor_from_codes(df[col].to_numpy(float), labels)
    df["s_estrato"] = df["s_estrato"].astype(np.int64)
    df["s_tpersona"] = df["s_tpersona"].astype(np.int64)
    first = ["suba", "control", "treatment", "T1_treat", "T2_treat", "school_code", "fu_nim_hogar",
             "survey_selected", "at_msamean"]
    return df[first + [c for c in df.columns if c not in first]]


def to_stata_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Codes in place of the labelled categoricals, and the value labels for pyreadstat."""
    out = df.copy()
    value_labels = {}
    for col, labels in cct.VALUE_LABELS.items():
        if col in out.columns:
            codes = cct.category_codes(out[col], labels)
            out[col] = codes.astype(np.int8) if not np.isnan(codes).any() else codes
            value_labels[col] = {int(k): v for k, v in labels.items()}
    for col in _INT_COLUMNS:  # stored as Stata byte, as in the real file
        if col in out.columns:
            out[col] = out[col].astype(np.int8)
    return out, value_labels


def write_synthetic_dta(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write :func:`make_synthetic` ``(seed)`` as a Stata .dta with value labels (atomically)."""
    import pyreadstat

    from clusterhte.io import atomic_path

    df, value_labels = to_stata_frame(make_synthetic(seed))
    path = Path(path)
    with atomic_path(path) as tmp:
        pyreadstat.write_dta(df, str(tmp), file_label=f"SYNTHETIC stand-in for the CCT trial (seed {seed})",
                             column_labels={k: v for k, v in _COLUMN_LABELS.items() if k in df.columns},
                             variable_value_labels=value_labels)
    return path


__all__ = ["make_synthetic", "to_stata_frame", "write_synthetic_dta"]
