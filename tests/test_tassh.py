"""TASSH cleaning: trial facts on the real file (skipped when absent) and rules on toy tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clusterhte import io
from clusterhte.data import tassh
from clusterhte.data.trial import TrialDataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tassh"
RDA = SHARED / "bp_ghana.rda"
CSV = SHARED / "bp_ghana_long.csv"
needs_file = pytest.mark.skipif(not RDA.is_file(), reason=f"TASSH data file not found at {RDA}")


# ------------------------------------------------------------------------------ toy raw table
def _toy_raw() -> pd.DataFrame:
    """4 sites (3, 3, 3, 4 patients) x 3 visits in the layout of bp_ghana; sites 1-2 control, 3-4
    treated; patient k = 0..12 in site order."""
    rows = []
    edu = list(tassh.EDUCATION_LEVELS)
    for s in range(1, 5):
        for p in range(3 + (s == 4)):
            pid = f"{s}{p:02d}X"
            k = 3 * (s - 1) + p
            base = dict(ID=pid, Age=40 + 3 * k, Gender=k % 2, EducationLevel=edu[k % 9],
                        EmploymentStatus=k % 2, Literacy=(k + 1) % 2, Smoking=[4, 0, 4, 3][k % 4],
                        Income="0", SiteNumber=s, CVRisk="999", BMI=20.0 + k, BMIClassification=1,
                        PhysicalActivity=100 * k, TrtorCtrl=int(s > 2), RuralUrban=s % 2,
                        DoctorsAvailable=s, NursesAvailable=10 * s, Patientsannually=1000 * s)
            for visit, sbp in zip(tassh.VISITS, (150.0 + k, 145.0, 140.0 - k)):
                rows.append({**base, "Time_Elapsed": visit, "SBP": sbp, "DBP": 90.0})
    return pd.DataFrame(rows)[list(tassh.RAW_COLUMNS)]


def test_toy_clean_outcome_and_roles():
    trial, exc = tassh.clean(_toy_raw())
    f = trial.frame
    assert trial.design == "crt" and trial.moderators == ()
    assert set(trial.cluster_covariates) == set(tassh.CLUSTER)
    k = np.arange(13)
    np.testing.assert_allclose(f["outcome"], (140.0 - k) - (150.0 + k))  # 12m - baseline
    np.testing.assert_allclose(f["treatment"], (f["cluster"] > 2).astype(float))
    np.testing.assert_allclose(f["smoker"], ([0, 1, 0, 1] * 4)[:13])
    np.testing.assert_allclose(f["education"], k % 9)
    np.testing.assert_allclose(f["cluster_size"], [3.0] * 9 + [4.0] * 4)
    assert not any(c.endswith("_missing") for c in f.columns)  # nothing missing -> no indicators
    assert exc["patients"].tolist() == [13, 13, 13, 13]


def test_toy_missing_codes_are_decoded_and_imputed():
    raw = _toy_raw()
    raw.loc[raw["ID"] == "100X", "BMI"] = 0.0
    raw.loc[raw["ID"] == "101X", "Age"] = 0
    raw.loc[raw["ID"] == "102X", "EducationLevel"] = "999"
    raw.loc[raw["ID"].isin(["200X", "201X"]), "EmploymentStatus"] = 999
    trial, _ = tassh.clean(raw, min_missing_indicator=1)
    f = trial.frame
    for col, ids in (("bmi", [0]), ("age", [1]), ("education", [2]), ("employed", [3, 4])):
        ind = f[f"{col}_missing"].to_numpy()
        assert np.flatnonzero(ind).tolist() == ids, col
        assert f"{col}_missing" in trial.individual_covariates
        others = np.delete(f[col].to_numpy(), ids)
        np.testing.assert_allclose(f[col].to_numpy()[ids], others.mean())  # mean-imputed
    assert f["bmi"].min() > 0 and f["age"].min() > 0
    # default threshold: gaps of 1-2 patients are imputed without an indicator
    default, _ = tassh.clean(raw)
    assert not any(c.endswith("_missing") for c in default.frame.columns)
    np.testing.assert_allclose(default.frame[list(tassh.INDIVIDUAL)], f[list(tassh.INDIVIDUAL)])


def test_toy_exclusion_counts_per_arm():
    raw = _toy_raw()
    raw.loc[(raw["ID"] == "100X") & (raw["Time_Elapsed"] == "Baseline"), "SBP"] = np.nan
    raw.loc[(raw["ID"].isin(["300X", "401X"])) & (raw["Time_Elapsed"] == "12Months"), "SBP"] = np.nan
    raw.loc[(raw["ID"] == "402X") & (raw["Time_Elapsed"] == "6Months"), "SBP"] = np.nan  # irrelevant
    trial, exc = tassh.clean(raw)
    assert exc["excluded"].tolist()[1:3] == [1, 2]
    assert exc["patients"].tolist() == [13, 12, 10, 10]
    assert exc["control"].tolist() == [6, 5, 5, 5] and exc["intervention"].tolist() == [7, 7, 5, 5]
    assert trial.n == 10
    # cluster size counts enrolled patients, not complete cases
    assert trial.frame.loc[trial.frame["cluster"] == 1, "cluster_size"].eq(3).all()


def test_treatment_varying_within_site_names_the_site():
    raw = _toy_raw()
    raw.loc[raw["ID"] == "301X", "TrtorCtrl"] = 0
    with pytest.raises(TrialDataError, match=r"treatment \('TrtorCtrl'\) varies within site\(s\) \[3\]"):
        tassh.clean(raw)


def test_site_column_varying_within_site_names_it():
    raw = _toy_raw()
    raw.loc[raw["ID"] == "202X", "NursesAvailable"] = 99
    with pytest.raises(TrialDataError, match=r"'NursesAvailable' varies within site\(s\) \[2\]"):
        tassh.clean(raw)


def test_patient_column_varying_between_visits_names_patient():
    raw = _toy_raw()
    raw.loc[(raw["ID"] == "201X") & (raw["Time_Elapsed"] == "6Months"), "Age"] = 80
    with pytest.raises(TrialDataError, match=r"'Age' differs between the visits of patient\(s\) \['201X'\]"):
        tassh.clean(raw)


def test_missing_raw_column_and_unknown_codes():
    with pytest.raises(TrialDataError, match="Patientsannually"):
        tassh.clean(_toy_raw().drop(columns="Patientsannually"))
    raw = _toy_raw()
    raw.loc[raw["ID"] == "100X", "EducationLevel"] = "PhD"
    with pytest.raises(TrialDataError, match="EducationLevel.*PhD"):
        tassh.clean(raw)
    raw = _toy_raw()
    raw.loc[raw["ID"] == "100X", "Time_Elapsed"] = "24Months"
    with pytest.raises(TrialDataError, match="Time_Elapsed"):
        tassh.clean(raw)


def test_read_raw_missing_file(tmp_path):
    with pytest.raises(TrialDataError, match="not found"):
        tassh.read_raw(tmp_path / "bp_ghana.rda")


def test_subgroup_masks_toy():
    trial, _ = tassh.clean(_toy_raw())
    masks = tassh.subgroup_masks(trial.frame)
    f = trial.frame
    np.testing.assert_array_equal(masks[("age", "age >= 60")], f["age"].to_numpy() >= 60)
    np.testing.assert_array_equal(masks[("sex", "male")], f["female"].to_numpy() == 0)
    for var in tassh.SUBGROUPS:
        pair = [m for (v, _), m in masks.items() if v == var]
        assert len(pair) == 2 and np.all(pair[0] ^ pair[1])


# ------------------------------------------------------------------------------ the real file
@pytest.fixture(scope="module")
def real():
    if not RDA.is_file():
        pytest.skip(f"TASSH data file not found at {RDA}")
    raw = tassh.read_raw(RDA)
    return raw, *tassh.clean(raw)


@needs_file
def test_raw_shape(real):
    raw, _, _ = real
    assert raw.shape == (2271, 21) and raw["ID"].nunique() == 757


@needs_file
def test_trial_facts(real):
    _, trial, exc = real
    first, last = exc.iloc[0], exc.iloc[-1]
    assert (first["patients"], first["sites"], first["control"], first["intervention"]) == (757, 32, 389, 368)
    assert (last["patients"], last["sites"], last["control"], last["intervention"]) == (641, 32, 318, 323)
    assert trial.n == 641 and trial.frame["cluster"].nunique() == 32
    assert int((trial.treatment == 0).sum()) == 318 and int((trial.treatment == 1).sum()) == 323
    # sites 1-16 control, 17-32 intervention
    arm = trial.frame.groupby("cluster")["treatment"].first()
    assert arm.loc[1:16].eq(0).all() and arm.loc[17:32].eq(1).all()
    sizes = trial.frame.groupby("cluster")["cluster_size"].first()
    assert sizes.min() == 17 and sizes.max() == 31 and sizes.sum() == 757


@needs_file
def test_exclusion_table_adds_up(real):
    _, trial, exc = real
    steps = exc.iloc[1:-1]
    assert steps["step"].tolist() == ["missing baseline SBP", "missing 12-month SBP"]
    assert steps["excluded"].tolist() == [1, 115]
    assert exc["patients"].iloc[0] - steps["excluded"].sum() == exc["patients"].iloc[-1] == trial.n
    # each step's count equals the drop in patients, and the arms add up on every row
    assert (exc["patients"].diff().iloc[1:-1].abs().astype(int).tolist() == steps["excluded"].tolist())
    assert (exc["control"] + exc["intervention"] == exc["patients"]).all()


@needs_file
def test_outcome_matches_csv_copy(real):
    """Independent path: the CSV copy of the same table, reshaped with pandas."""
    _, trial, _ = real
    if not CSV.is_file():
        pytest.skip(f"CSV copy not found at {CSV}")
    long = pd.read_csv(CSV)
    w = long.pivot(index="ID", columns="Time_Elapsed", values="SBP")
    d = (w["12Months"] - w["Baseline"]).dropna()
    site = long.drop_duplicates("ID").set_index("ID")["SiteNumber"]
    ref = pd.DataFrame({"cluster": site.loc[d.index], "outcome": d}).sort_values(["cluster"], kind="stable")
    assert len(d) == 641
    got = trial.frame.groupby("cluster")["outcome"].agg(["sum", "size"])
    exp = ref.groupby("cluster")["outcome"].agg(["sum", "size"])
    np.testing.assert_allclose(got.to_numpy(), exp.to_numpy())
    np.testing.assert_array_equal(trial.extra["patient_id"], (d.index.to_numpy(dtype=str)[
        np.lexsort((d.index.to_numpy(dtype=str), site.loc[d.index].to_numpy()))]))


@needs_file
def test_missing_codes_on_real_file(real):
    raw, trial, _ = real
    f = trial.frame
    base = raw[raw["Time_Elapsed"] == "Baseline"].set_index("ID").loc[trial.extra["patient_id"]]
    np.testing.assert_array_equal(f["bmi_missing"].to_numpy(), (base["BMI"] == 0).to_numpy())
    np.testing.assert_array_equal(f["education_missing"].to_numpy(), (base["EducationLevel"] == "999").to_numpy())
    np.testing.assert_array_equal(f["employed_missing"].to_numpy(), (base["EmploymentStatus"] == 999).to_numpy())
    assert raw.drop_duplicates("ID")["BMI"].eq(0).sum() == 345  # README fact
    assert not f.isna().any().any()
    assert "age_missing" not in f.columns  # one patient: imputed without an indicator
    assert f[["bmi_missing", "education_missing", "employed_missing"]].sum().tolist() == [232, 56, 45]
    assert f["bmi"].min() > 10 and f["age"].min() >= 18
    assert set(tassh.INDIVIDUAL) <= set(trial.individual_covariates)
    assert "income" not in f.columns and "cvrisk" not in f.columns


@needs_file
def test_complete_case_difference_matches_spec(real):
    """Spec §5.2: random-intercept LMM, unadjusted difference -2.95 (SE 1.92), ICC 0.036."""
    import statsmodels.formula.api as smf

    _, trial, _ = real
    f = trial.frame
    r = smf.mixedlm("outcome ~ treatment", f, groups=f["cluster"]).fit(reml=True)
    assert r.params["treatment"] == pytest.approx(-2.95, abs=0.01)
    assert r.bse["treatment"] == pytest.approx(1.92, abs=0.01)
    icc = r.cov_re.iloc[0, 0] / (r.cov_re.iloc[0, 0] + r.scale)
    assert icc == pytest.approx(0.036, abs=0.002)
    means = f.groupby("treatment")["outcome"].mean()
    assert means[0.0] == pytest.approx(-16.6, abs=0.05) and means[1.0] == pytest.approx(-19.6, abs=0.05)


@needs_file
def test_roundtrip_parquet(real, tmp_path):
    _, trial, _ = real
    p = io.write_trial(trial, tmp_path / "tassh.parquet")
    back = io.read_trial(p)
    assert back.roles()["individual_covariates"] == list(trial.individual_covariates)
    pd.testing.assert_frame_equal(back.frame, trial.frame)
