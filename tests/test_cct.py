"""CCT trial cleaning (spec otr_multisite.md §4): every exclusion step on hand-built tables with
known answers, the reference row-order emulation, the recodes, reading the Stata file and the
analysis table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clusterhte.data import cct
from clusterhte.data.trial import TrialDataError

# Household (SISBEN) values shared by default; tests override single keys.
BASE_KEYS = dict(s_durables=1.0, s_edadhead=40.0, s_estcivil=5.0, s_estrato=1, s_infraest_hh=10.0,
                 s_ingtotal=300.0, s_num18=2.0, s_puntaje=10.0, s_single=0.0, s_tpersona=4,
                 s_teneviv=1.0, s_utilities=4.0, s_yrshead=5.0)
BASE = dict(suba=0.0, control=0.0, treatment=1.0, school_code=1.0, fu_nim_hogar=np.nan,
            survey_selected=1.0, at_msamean=0.9, s_sexo=1.0, s_age_sorteo=13.0, s_years_back=0.0,
            s_yrs=6.0, grade=7.0, s_over_age=0.0, **BASE_KEYS)


def make_raw(rows: list[dict], unique_keys: bool = True) -> pd.DataFrame:
    """A raw table as read_raw returns it; ``unique_keys`` gives each row its own s_puntaje
    unless the row sets it, so only the intended SISBEN duplicate groups exist."""
    recs = []
    for i, r in enumerate(rows):
        rec = dict(BASE)
        if unique_keys and "s_puntaje" not in r:
            rec["s_puntaje"] = 10.0 + 0.01 * i
        rec.update(r)
        if "treatment" in r and "control" not in r:
            rec["control"] = 1.0 - rec["treatment"]
        recs.append(rec)
    df = pd.DataFrame(recs)
    for col, labels in cct.VALUE_LABELS.items():
        df[col] = cct.factor_from_codes(df[col].to_numpy(float), labels)
    assert set(cct.REQUIRED_COLUMNS) <= set(df.columns)
    return df


# ----------------------------------------------------------------------------- the main scenario
G3 = dict(s_puntaje=50.0, s_ingtotal=200.0)  # the household values of a SISBEN duplicate group
SCENARIO = [
    # two rows step 2 removes
    dict(suba=1.0, school_code=9.0, fu_nim_hogar=500.0),             # Suba; sibling of s8
    dict(control=0.0, treatment=0.0),                                # neither arm
    # San Cristóbal rows s0..s14 (caseID 10000 + k)
    dict(fu_nim_hogar=101.0, s_ingtotal=380.0, s_sexo=0.0, s_estcivil=5.0),   # s0 kept
    dict(**G3),                                                      # s1 duplicate group (3)
    dict(**G3, treatment=0.0),                                       # s2 duplicate group
    dict(fu_nim_hogar=102.0, treatment=0.0),                         # s3 household of two
    dict(fu_nim_hogar=102.0, survey_selected=0.0),                   # s4 household of two + no survey
    dict(**G3),                                                      # s5 duplicate group
    dict(**G3, s_yrshead=6.0),                                       # s6 differs in one key: kept
    dict(**G3, fu_nim_hogar=103.0),                                  # s7 same values, id observed: kept
    dict(fu_nim_hogar=500.0, s_ingtotal=381.0, s_estcivil=2.0, treatment=0.0),  # s8 kept (sibling in Suba)
    dict(school_code=3.0, fu_nim_hogar=104.0),                       # s9 one-student school
    dict(school_code=2.0, fu_nim_hogar=105.0),                       # s10 kept: school 2 had 2 registrants
    dict(school_code=2.0, fu_nim_hogar=106.0, survey_selected=0.0),  # s11 not surveyed
    dict(school_code=np.nan, fu_nim_hogar=107.0),                    # s12 no school code
    dict(survey_selected=np.nan),                                    # s13 survey missing
    dict(fu_nim_hogar=110.0, treatment=0.0),                         # s14 kept
]
KEPT = [10000, 10006, 10007, 10008, 10010, 10014]


@pytest.fixture(scope="module")
def scenario():
    return cct.clean(make_raw(SCENARIO))


def test_kept_rows_are_the_known_answer(scenario):
    frame, _ = scenario
    assert frame["caseID"].tolist() == KEPT
    # the school left with one student by the survey filter is kept (counted before the filters)
    assert frame.loc[frame["caseID"] == 10010, "school_code"].item() == 2.0
    assert (frame["school_code"] == 2.0).sum() == 1


def test_exclusion_table_counts(scenario):
    _, ex = scenario
    ex = ex.set_index("step")
    assert ex.loc[0, "rows_left"] == 17
    assert (ex.loc[2, "removed"], ex.loc[2, "rows_left"]) == (2, 15)
    # own removal count (on the step-2 subset) and the sequential count of each one-mask step
    assert ex.loc[4, ["removed", "removed_sequential", "rows_left"]].tolist() == [3, 3, 12]
    assert ex.loc[5, ["removed", "removed_sequential", "rows_left"]].tolist() == [2, 2, 10]
    assert ex.loc[6, ["removed", "removed_sequential", "rows_left"]].tolist() == [2, 2, 8]
    assert ex.loc[7, ["removed", "removed_sequential", "rows_left"]].tolist() == [3, 2, 6]
    assert ex.loc[7, "schools_left"] == 2
    assert list(ex.index) == [0, 2, 4, 5, 6, 7]


def test_treatment_caseid_and_recodes(scenario):
    frame, _ = scenario
    f = frame.set_index("caseID")
    assert f.loc[10000, "trt"] == 1.0 and f.loc[10008, "trt"] == 0.0
    # inc_380 = 1{s_ingtotal <= 380}: 380 -> 1, 381 -> 0
    assert f.loc[10000, "inc_380"] == 1.0 and f.loc[10008, "inc_380"] == 0.0
    # s_sexo: unlabelled code 0 -> 0, labelled code 1 -> 1
    assert f.loc[10000, "s_sexo"] == 0.0 and f.loc[10008, "s_sexo"] == 1.0
    # s_estcivil: "Single" -> 1, "Married" -> 0
    assert f.loc[10000, "s_estcivil"] == 1.0 and f.loc[10008, "s_estcivil"] == 0.0
    assert isinstance(frame["grade"].dtype, pd.CategoricalDtype)
    assert isinstance(frame["s_estrato"].dtype, pd.CategoricalDtype)
    assert list(frame["s_teneviv"].cat.categories) == list(cct.VALUE_LABELS["s_teneviv"].values())


def test_numeric_codes_give_the_same_sample():
    raw = make_raw(SCENARIO)
    coded = raw.copy()
    for col in ("s_teneviv", "s_estcivil"):
        coded[col] = cct.category_codes(raw[col], cct.VALUE_LABELS[col])
    a, ea = cct.clean(raw)
    b, eb = cct.clean(coded)
    pd.testing.assert_frame_equal(ea, eb)
    assert a["caseID"].tolist() == b["caseID"].tolist()
    assert a["s_estcivil"].tolist() == b["s_estcivil"].tolist()


def test_household_count_ignores_rows_outside_san_cristobal():
    # s8 shares household 500 with a Suba registrant only: kept (count taken in dat_San)
    frame, _ = cct.clean(make_raw(SCENARIO))
    assert 10008 in frame["caseID"].tolist()
    # ... but two San Cristóbal students sharing it are both dropped, even when one is also
    # excluded by another step
    rows = [dict(fu_nim_hogar=7.0), dict(fu_nim_hogar=7.0, survey_selected=0.0), dict(), dict(treatment=0.0)]
    frame, ex = cct.clean(make_raw(rows))
    assert frame["caseID"].tolist() == [10002, 10003]
    assert ex.set_index("step").loc[5, "removed"] == 2


def test_missing_key_values_match_each_other():
    rows = [dict(s_puntaje=np.nan, s_utilities=np.nan), dict(s_puntaje=np.nan, s_utilities=np.nan, treatment=0.0),
            dict(s_puntaje=np.nan), dict(treatment=0.0), dict()]
    frame, _ = cct.clean(make_raw(rows))
    assert frame["caseID"].tolist() == [10002, 10003, 10004]


def test_missing_required_column_is_named():
    raw = make_raw([dict()]).drop(columns=["survey_selected", "s_num18"])
    with pytest.raises(TrialDataError, match="survey_selected.*s_num18|s_num18.*survey_selected"):
        cct.clean(raw)


# ----------------------------------------------------------------------------- reference row order
def _na_rows(rows):
    df = make_raw(rows, unique_keys=False)
    df["caseID"] = 10000 + np.arange(len(df))
    return df


def test_reference_order_primary_key_first():
    # keys equal except s_durables (the first key); rows 1 and 3 are the duplicate pair
    na = _na_rows([dict(s_durables=3.0), dict(s_durables=2.0), dict(s_durables=1.0), dict(s_durables=2.0)])
    assert cct.sisben_duplicate_caseids(na).tolist() == [10001, 10003]
    # setkey order: rows 2, 1, 3, 0 -> duplicated positions 1, 2 -> caseIDs of unsorted rows 1, 2
    assert cct.sisben_duplicate_caseids(na, reference_row_order=True).tolist() == [10001, 10002]
    # later keys only break ties: s_puntaje large on the first row does not move it
    na2 = _na_rows([dict(s_durables=2.0, s_puntaje=1.0), dict(s_durables=1.0, s_puntaje=9.0),
                    dict(s_durables=2.0, s_puntaje=1.0)])
    assert cct.sisben_duplicate_caseids(na2, reference_row_order=True).tolist() == [10001, 10002]


def test_reference_order_missing_first():
    na = _na_rows([dict(s_ingtotal=200.0), dict(s_ingtotal=np.nan), dict(s_ingtotal=200.0)])
    assert cct.sisben_duplicate_caseids(na).tolist() == [10000, 10002]
    # NA sorts first: order 1, 0, 2 -> positions 1, 2 (NA last would give 10000, 10001)
    assert cct.sisben_duplicate_caseids(na, reference_row_order=True).tolist() == [10001, 10002]


def test_reference_order_factor_by_level_code():
    # s_teneviv code 3 ("Own payed") sorts after code 1 ("Rent") although its label sorts first
    na = _na_rows([dict(s_teneviv=3.0), dict(s_teneviv=1.0), dict(s_teneviv=3.0)])
    assert cct.sisben_duplicate_caseids(na).tolist() == [10000, 10002]
    assert cct.sisben_duplicate_caseids(na, reference_row_order=True).tolist() == [10001, 10002]


def test_reference_order_in_clean_same_count_other_caseids():
    rows = [dict(s_durables=3.0), dict(s_durables=2.0, treatment=0.0), dict(s_durables=1.0),
            dict(s_durables=2.0), dict(fu_nim_hogar=1.0, treatment=0.0)]
    raw = make_raw(rows, unique_keys=False)
    right, e1 = cct.clean(raw)
    ref, e2 = cct.clean(raw, reference_row_order=True)
    assert right["caseID"].tolist() == [10000, 10002, 10004]
    assert ref["caseID"].tolist() == [10000, 10003, 10004]
    assert e1.set_index("step").loc[4, "removed"] == e2.set_index("step").loc[4, "removed"] == 2


def test_reference_order_on_sorted_rows_is_correct():
    rows = [dict(s_durables=1.0), dict(s_durables=2.0), dict(s_durables=2.0), dict(s_durables=3.0)]
    na = _na_rows(rows)
    assert (cct.sisben_duplicate_caseids(na).tolist()
            == cct.sisben_duplicate_caseids(na, reference_row_order=True).tolist() == [10001, 10002])


def test_group_of_three_every_member_dropped_in_both_modes():
    rows = [dict(s_yrshead=9.0), dict(), dict(s_yrshead=9.0), dict(s_yrshead=9.0), dict(s_yrshead=1.0)]
    na = _na_rows(rows)
    assert cct.sisben_duplicate_caseids(na).tolist() == [10000, 10002, 10003]
    # sorted by s_yrshead (last key): rows 4, 1, 0, 2, 3 -> positions 2, 3, 4
    assert cct.sisben_duplicate_caseids(na, reference_row_order=True).tolist() == [10002, 10003, 10004]


# ----------------------------------------------------------------------------- reading
def _write_dta(path, df, labels):
    import pyreadstat

    pyreadstat.write_dta(df, str(path), variable_value_labels=labels)


def test_read_raw_applies_value_labels(tmp_path):
    raw = make_raw(SCENARIO)
    coded = raw.copy()
    labels = {}
    for col, lab in cct.VALUE_LABELS.items():
        coded[col] = cct.category_codes(raw[col], lab).astype(np.int8)
        labels[col] = {int(k): v for k, v in lab.items()}
    p = tmp_path / "cct.dta"
    _write_dta(p, coded, labels)
    back = cct.read_raw(p)
    for col in cct.VALUE_LABELS:
        assert isinstance(back[col].dtype, pd.CategoricalDtype)
        assert list(back[col].cat.categories) == list(raw[col].cat.categories)
        assert back[col].astype(object).tolist() == raw[col].astype(object).tolist()
    assert list(back["s_sexo"].cat.categories)[0] == "0"  # unlabelled code kept as its digits
    a, ea = cct.clean(back)
    assert a["caseID"].tolist() == KEPT
    pd.testing.assert_frame_equal(ea, cct.clean(raw)[1])


def test_read_raw_missing_columns_lists_them_and_the_file(tmp_path):
    raw = make_raw([dict()])
    coded = raw.drop(columns=["survey_selected", "grade"])
    for col, lab in cct.VALUE_LABELS.items():
        coded[col] = cct.category_codes(raw[col], lab)
    p = tmp_path / "partial.dta"
    _write_dta(p, coded, {})
    with pytest.raises(TrialDataError) as e:
        cct.read_raw(p)
    msg = str(e.value)
    assert "partial.dta" in msg and "survey_selected" in msg and "grade" in msg


def test_read_raw_missing_file(tmp_path):
    with pytest.raises(TrialDataError, match="not found"):
        cct.read_raw(tmp_path / "nope.dta")


# ----------------------------------------------------------------------------- analysis table
def _analysis_rows():
    """Two schools, both arms, every factor level present."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(60):
        rows.append(dict(
            school_code=float(1 + i % 2), fu_nim_hogar=float(1000 + i), treatment=float(i % 3 != 0),
            s_teneviv=float(1 + i % 4), s_estrato=int(i % 3), grade=float(6 + i % 6),
            s_ingtotal=float(rng.integers(100, 700)), s_estcivil=float(1 + i % 5),
            s_years_back=float(rng.integers(-2, 3)), s_sexo=float(i % 2), at_msamean=float(rng.uniform()),
            s_age_sorteo=float(rng.integers(11, 18)), s_utilities=float(rng.integers(1, 7)),
            s_over_age=float(i % 5 == 0), s_yrs=float(rng.integers(3, 11)),
            s_durables=float(rng.integers(0, 5)), s_edadhead=float(rng.integers(25, 70)),
            s_infraest_hh=float(rng.integers(5, 15)), s_num18=float(rng.integers(0, 5)),
            s_puntaje=float(rng.uniform(2, 20)), s_single=float(rng.integers(0, 2)),
            s_tpersona=int(rng.integers(2, 9)), s_yrshead=float(rng.integers(0, 12))))
    return rows


def test_to_trial_columns_and_roles():
    frame, _ = cct.clean(make_raw(_analysis_rows()))
    td = cct.to_trial(frame)
    assert td.design == "multisite"
    teneviv = list(cct.W_PENALIZED_MODERATORS)
    assert teneviv == ["s_tenevivOwn.paying.it", "s_tenevivOwn.payed", "s_tenevivOther.condition"]
    assert list(td.moderators) == teneviv + ["s_years_back", "grade7", "grade8", "grade9", "grade10",
                                             "grade11", "s_estrato1", "s_estrato2", "inc_380"]
    assert list(td.covariates) == (teneviv + ["s_utilities", "s_durables", "s_infraest_hh", "s_age_sorteo",
                                              "s_years_back", "s_sexo", "s_estcivil", "s_single", "s_edadhead",
                                              "s_yrs", "s_yrshead", "s_tpersona", "s_num18", "s_estrato1",
                                              "s_estrato2", "inc_380", "s_puntaje", "s_ingtotal", "grade7",
                                              "grade8", "grade9", "grade10", "grade11", "s_over_age"])
    assert td.extra["penalized_moderators"] == teneviv
    np.testing.assert_array_equal(td.cluster, frame["school_code"].to_numpy().astype(int))
    np.testing.assert_array_equal(td.treatment, frame["trt"].to_numpy())
    np.testing.assert_array_equal(td.outcome, frame["at_msamean"].to_numpy())


def test_to_trial_dummies_match_pandas_get_dummies():
    frame, _ = cct.clean(make_raw(_analysis_rows()))
    td = cct.to_trial(frame)
    assert len(frame) == 60
    names = {"s_teneviv": lambda c: c.replace(" ", "."), "grade": lambda c: str(int(float(c))),
             "s_estrato": lambda c: str(c)}
    for var, name in names.items():
        ref = pd.get_dummies(frame[var], drop_first=True, dtype=float)
        assert ref.shape[1] == {"s_teneviv": 3, "grade": 5, "s_estrato": 2}[var]
        for c in ref.columns:
            col = var + name(c)
            np.testing.assert_array_equal(td.frame[col].to_numpy(), ref[c].to_numpy(), err_msg=col)
    i = np.arange(60)
    np.testing.assert_array_equal(td.frame["s_estcivil"].to_numpy(), (i % 5 == 4).astype(float))
    np.testing.assert_array_equal(td.frame["inc_380"].to_numpy(),
                                  (frame["s_ingtotal"].to_numpy() <= 380).astype(float))


def test_to_trial_missing_covariate_is_named():
    frame, _ = cct.clean(make_raw(_analysis_rows()))
    frame.loc[3, "s_yrs"] = np.nan
    with pytest.raises(TrialDataError, match="s_yrs"):
        cct.to_trial(frame)
    with pytest.raises(TrialDataError, match="trt"):
        cct.to_trial(frame.drop(columns="trt"))


def test_school_treated_shares():
    frame, _ = cct.clean(make_raw(SCENARIO))
    sh = cct.school_treated_shares(frame).set_index("school")
    # kept: school 1 -> 10000 (T), 10006 (T), 10007 (T), 10008 (C), 10014 (C); school 2 -> 10010 (T)
    assert sh.loc[1.0, ["n", "n_treated"]].tolist() == [5, 3]
    assert sh.loc[1.0, "share"] == pytest.approx(0.6)
    assert sh.loc[2.0, "share"] == 1.0
