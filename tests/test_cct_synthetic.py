"""The synthetic stand-in for the CCT trial file: shape, determinism, the Stata round trip and a
cleaning run that exercises every exclusion step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from clusterhte.data import cct
from clusterhte.simulate import cct_synthetic as syn


@pytest.fixture(scope="module")
def dta(tmp_path_factory):
    path = tmp_path_factory.mktemp("cct") / "synthetic.dta"
    syn.write_synthetic_dta(path, seed=11)
    return path


@pytest.fixture(scope="module")
def raw(dta):
    return cct.read_raw(dta)


@pytest.fixture(scope="module")
def cleaned(raw):
    return cct.clean(raw)


def test_deterministic_given_seed():
    a = syn.make_synthetic(5)
    pd.testing.assert_frame_equal(a, syn.make_synthetic(5))
    b = syn.make_synthetic(6)
    assert len(a) != len(b) or not a["at_msamean"].equals(b["at_msamean"])


def test_codebook_columns_and_types():
    df = syn.make_synthetic(0)
    assert set(cct.REQUIRED_COLUMNS) <= set(df.columns)
    assert list(df["s_teneviv"].cat.categories) == list(cct.VALUE_LABELS["s_teneviv"].values())
    assert "Single" in set(df["s_estcivil"].astype(object))
    assert set(df["grade"].unique()) == {6.0, 7.0, 8.0, 9.0, 10.0, 11.0}
    assert set(df["s_estrato"].unique()) == {0, 1, 2}
    assert set(df["suba"].unique()) == {0.0, 1.0}
    np.testing.assert_array_equal(df["control"] + df["treatment"], 1.0)
    np.testing.assert_array_equal(df["T1_treat"] + df["T2_treat"], df["treatment"])
    at = df["at_msamean"].to_numpy()
    surveyed = df["survey_selected"].to_numpy() == 1
    assert np.isfinite(at[surveyed]).all() and np.isnan(at[~surveyed]).all()
    assert at[surveyed].min() >= 0 and at[surveyed].max() <= 1
    assert surveyed.mean() > 0.5
    san = df[df["suba"] == 0]
    assert san["school_code"].nunique() >= 26
    # siblings share household ids; some household ids are missing
    hh = san["fu_nim_hogar"]
    assert hh.isna().any() and (hh.value_counts() > 1).any()
    # a few single-registrant schools
    assert ((san["school_code"].value_counts() == 1).sum()) >= 3


def test_round_trip_through_read_raw(raw):
    df = syn.make_synthetic(11)
    assert list(raw.columns) == list(df.columns)
    for c in df.columns:
        a, b = df[c], raw[c]
        if isinstance(a.dtype, pd.CategoricalDtype):
            assert list(b.cat.categories) == list(a.cat.categories), c
            assert b.astype(object).tolist() == a.astype(object).tolist(), c
        else:
            np.testing.assert_array_equal(b.to_numpy(dtype=float), a.to_numpy(dtype=float), err_msg=c)


def test_cleaning_runs_every_step(cleaned):
    frame, ex = cleaned
    ex = ex.set_index("step")
    for step in (2, 4, 5, 6, 7):
        assert ex.loc[step, "removed"] > 0, step
        assert ex.loc[step, "removed_sequential"] > 0, step
    # the one-mask steps overlap: the survey step removes fewer rows after the others
    assert ex.loc[7, "removed_sequential"] < ex.loc[7, "removed"]
    assert frame["school_code"].nunique() >= 20
    assert len(frame) >= 1500
    assert ex.loc[7, "rows_left"] == len(frame)
    shares = cct.school_treated_shares(frame)["share"]
    assert 0 < shares.min() and shares.max() < 1


def test_reference_row_order_same_count_other_students(raw, cleaned):
    frame, ex = cleaned
    ref, ex_ref = cct.clean(raw, reference_row_order=True)
    assert ex_ref.set_index("step").loc[4, "removed"] == ex.set_index("step").loc[4, "removed"]
    assert set(ref["caseID"]) != set(frame["caseID"])


def test_analysis_table(cleaned):
    frame, _ = cleaned
    td = cct.to_trial(frame)
    assert td.design == "multisite"
    assert len(td.covariates) == 27 and len(td.moderators) == 12
    assert td.extra["penalized_moderators"] == list(cct.W_PENALIZED_MODERATORS)
    assert td.frame["cluster"].nunique() == frame["school_code"].nunique()


def test_effect_varies_with_income_and_grade(cleaned):
    frame, _ = cleaned
    cate = frame["syn_cate"].to_numpy()
    low = frame["inc_380"].to_numpy() == 1
    assert cate[low].mean() - cate[~low].mean() > 0.03
    g = frame["grade"].astype(float).to_numpy()
    by_grade = pd.Series(cate).groupby(g).mean()
    assert by_grade[[6.0, 9.0, 11.0]].min() > by_grade[[7.0, 8.0, 10.0]].max()
    # the heterogeneity is visible in the observed outcome: school fixed effects, trt x inc_380
    d = pd.DataFrame({"y": frame["at_msamean"].to_numpy(), "trt": frame["trt"].to_numpy(),
                      "low": low.astype(float), "school": frame["school_code"].astype(int).astype(str)})
    fit = smf.ols("y ~ trt * low + C(school)", data=d).fit()
    assert fit.params["trt:low"] > 0


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning")
def test_outcome_icc_near_the_paper(cleaned):
    """The paper reports an outcome ICC of 0.05 for the trial; REML random-intercept fit."""
    frame, _ = cleaned
    d = frame.assign(school=frame["school_code"].astype(int).astype(str))
    fit = smf.mixedlm("at_msamean ~ 1", d, groups="school").fit(reml=True)
    tau2 = float(fit.cov_re.iloc[0, 0])
    assert 0.02 < tau2 / (tau2 + fit.scale) < 0.12
