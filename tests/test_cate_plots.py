"""Figures of CATE summaries: content of the drawn artists, saving, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from clusterhte.data.trial import TrialDataError
from clusterhte.evaluate import summaries as S
from clusterhte.plots import cate as P
from clusterhte.plots import save_figure


@pytest.fixture(scope="module")
def fits():
    rng = np.random.default_rng(2)
    cl = np.repeat(np.arange(8), 6)
    n = cl.size
    base = rng.normal(-3, 2, n)
    return pd.concat([pd.DataFrame({"method": m, "row": np.arange(n), "cluster": cl,
                                    "cate": base + rng.normal(0, s, n)})
                      for m, s in (("lmm", 0.0), ("cf", 1.0), ("ribart", 0.5))], ignore_index=True)


@pytest.fixture(scope="module")
def frame(fits):
    n = fits["row"].max() + 1
    rng = np.random.default_rng(4)
    return pd.DataFrame({"cluster": np.repeat(np.arange(8), 6), "treatment": np.repeat(np.arange(8) % 2, 6),
                         "outcome": rng.normal(size=n), "female": rng.binomial(1, 0.5, n)})


def test_cate_distribution(fits, tmp_path):
    fig = P.cate_distribution(fits, larger_is_better=False, outcome="ΔSBP")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["riBART", "CF", "LMM"]  # project order
    ate = ax.collections[-1].get_offsets()[:, 1]  # the ATE diamonds
    exp = fits.groupby("method")["cate"].mean()
    np.testing.assert_allclose(ate, exp[["ribart", "cf", "lmm"]].to_numpy())
    assert "below 0 = benefit" in ax.get_ylabel()
    save_figure(fig, [tmp_path / "d.png", tmp_path / "d.pdf"])
    assert (tmp_path / "d.png").stat().st_size > 0 and (tmp_path / "d.pdf").stat().st_size > 0


def test_cate_distribution_constant_method_and_bad_input(fits):
    const = pd.DataFrame({"method": "flat", "row": range(5), "cate": 1.0})
    fig = P.cate_distribution(pd.concat([fits, const]))
    assert len(fig.axes[0].get_xticklabels()) == 4
    with pytest.raises(TrialDataError, match="cate"):
        P.cate_distribution(fits.drop(columns="cate"))
    with pytest.raises(TrialDataError, match="gamm"):
        P.cate_distribution(fits, methods=["gamm"])


def test_subgroup_forest(fits, frame):
    groups = {("sex", "female"): frame["female"].to_numpy() == 1,
              ("sex", "male"): frame["female"].to_numpy() == 0}
    t = pd.concat([S.subgroup_table(fits, frame, groups), S.subgroup_difference_in_means(frame, groups)],
                  ignore_index=True)
    fig = P.subgroup_forest(t)
    ax = fig.axes[0]
    labels = [x.get_text() for x in ax.get_yticklabels()]
    assert labels[0].startswith("sex: female (n=") and len(labels) == 2
    # one marker line per method, x = the subgroup CATEs
    pts = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert len(pts) == 4
    xs = np.sort(np.concatenate([ln.get_xdata() for ln in pts]))
    np.testing.assert_allclose(xs, np.sort(t["cate"].to_numpy()))
    # intervals only for the difference in means (2 subgroups)
    segs = sum(len(c.get_segments()) for c in ax.collections)
    assert segs == 2
    with pytest.raises(TrialDataError, match="variable"):
        P.subgroup_forest(t.drop(columns="variable"))


def test_cluster_caterpillar(fits):
    ca = S.cluster_average(fits)
    fig = P.cluster_caterpillar(ca, ncols=2)
    assert len(fig.axes) == 3 and [a.get_title() for a in fig.axes] == ["riBART", "CF", "LMM"]
    y = fig.axes[1].get_lines()[0].get_ydata()
    np.testing.assert_allclose(y, np.sort(ca[ca["method"] == "cf"]["cate"]))
    ate = fig.axes[1].get_lines()[1].get_ydata()[0]
    assert ate == pytest.approx(fits.loc[fits["method"] == "cf", "cate"].mean())


def test_agreement_heatmap(fits):
    a = S.agreement_matrix(fits)
    fig = P.agreement_heatmap(a)
    ax = fig.axes[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): float(t.get_text()) for t in ax.texts}
    ms = ["ribart", "cf", "lmm"]
    r = a.set_index(["method_a", "method_b"])
    assert len(texts) == 6  # off-diagonal cells only
    assert texts[(1, 0)] == pytest.approx(r.loc[("cf", "ribart"), "spearman"], abs=0.005)
    assert texts[(0, 2)] == pytest.approx(r.loc[("ribart", "lmm"), "decision_agreement"], abs=0.005)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["riBART", "CF", "LMM"]
    with pytest.raises(TrialDataError, match="gamm"):
        P.agreement_heatmap(a, methods=ms + ["gamm"])
