"""Figures of the multisite-OTR simulation (paper Figures 1-5, 10-15) and the CCT application
(Figures 6-9 and the treated-share histogram), built from small made-up tables."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from clusterhte.plots import cct as cplots  # noqa: E402
from clusterhte.plots import otr as oplots  # noqa: E402
from clusterhte.plots import save_figure  # noqa: E402

METHODS = list(oplots.METHOD_ORDER)
LABELS = ["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs", "W-base", "W-noaug", "W-aug",
          "W-augID", "WS-noaug", "WS-aug", "WS-augID"]


def _saves(fig, tmp_path, name):
    paths = [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]
    save_figure(fig, paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


@pytest.fixture(scope="module")
def per_rep():
    rng = np.random.default_rng(0)
    rows = []
    for (J, n) in [(25, 25), (25, 150), (150, 25)]:
        for k, m in enumerate(METHODS):
            for rep in range(6):
                for metric in ("accuracy", "f1", "rank_corr", "auc"):
                    rows.append(dict(design="d1", J=J, n=n, rep=rep, method=m, metric=metric,
                                     value=0.6 + 0.02 * k + 0.01 * rng.standard_normal()))
    df = pd.DataFrame(rows)
    other = df[df["metric"] == "accuracy"].assign(design="d2", value=0.1)
    return pd.concat([df, other], ignore_index=True)


# ----------------------------------------------------------------------------- labels
def test_method_labels_and_order():
    assert [oplots.METHOD_LABELS[m] for m in METHODS] == LABELS
    assert oplots.method_key("W[S]-augID") == "ws-augid"
    assert oplots.method_key("Q-dm-rs") == "q-dm-rs"
    assert oplots.ordered_methods(["ws-aug", "Q-base", "w-base"]) == ["q-base", "w-base", "ws-aug"]
    with pytest.raises(ValueError, match="unknown OTR method"):
        oplots.method_key("q-foo")


# ----------------------------------------------------------------------------- simulation figures
def test_accuracy_boxplots(per_rep, tmp_path):
    fig = oplots.accuracy_boxplots(per_rep, "d1")
    assert len(fig.axes) == 3  # one row per (J, n)
    ax = fig.axes[1]
    assert "(25, 150)" in ax.get_title(loc="left")
    assert [t.get_text() for t in ax.get_xticklabels()] == LABELS
    # the mean over replicates above each box, from design d1 only
    cell = per_rep[(per_rep["design"] == "d1") & (per_rep["J"] == 25) & (per_rep["n"] == 150)
                   & (per_rep["metric"] == "accuracy")]
    means = cell.groupby("method")["value"].mean()
    texts = [t.get_text() for t in ax.texts]
    assert texts == [f"{means[m]:.3f}" for m in METHODS]
    # Q and W boxes in two colours
    boxes = [p for p in ax.patches]
    assert len({tuple(np.round(b.get_facecolor(), 3)) for b in boxes[:7]}) == 1
    assert boxes[0].get_facecolor() != boxes[7].get_facecolor()
    _saves(fig, tmp_path, "accuracy")


def test_accuracy_boxplots_labels_as_input(per_rep):
    relabeled = per_rep.assign(method=per_rep["method"].map(oplots.METHOD_LABELS))
    fig = oplots.accuracy_boxplots(relabeled, "d1")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == LABELS


def test_accuracy_boxplots_bad_input(per_rep):
    with pytest.raises(ValueError, match="missing column"):
        oplots.accuracy_boxplots(per_rep.drop(columns="rep"), "d1")
    with pytest.raises(ValueError, match="no 'accuracy' values"):
        oplots.accuracy_boxplots(per_rep, "d9")


def test_metric_panels(per_rep, tmp_path):
    fig = oplots.metric_panels(per_rep, "d1")
    visible = [a for a in fig.axes if a.get_visible()]
    assert len(visible) == 4
    assert [a.get_title() for a in visible] == ["Accuracy", "F1 score", "Rank correlation", "AUC"]
    # one line per sample size; its points are the means over replicates
    line = visible[2].lines[0]
    cell = per_rep[(per_rep["design"] == "d1") & (per_rep["J"] == 25) & (per_rep["n"] == 25)
                   & (per_rep["metric"] == "rank_corr")]
    np.testing.assert_allclose(line.get_ydata(), cell.groupby("method")["value"].mean()[METHODS].to_numpy())
    _saves(fig, tmp_path, "metrics")


def _congruence_matrix(k=14, seed=0):
    rng = np.random.default_rng(seed)
    d = (rng.random((200, k)) < 0.7).astype(float)
    d[:, 1] = d[:, 2]  # two identical methods: 100% congruence
    agree = (d.T @ d + (1 - d).T @ (1 - d)) / d.shape[0]
    return agree


def test_congruence_heatmap_lower_triangle_numbers(tmp_path):
    M = _congruence_matrix()
    fig = oplots.congruence_heatmap(M, METHODS, "Design 1")
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # heatmap and colour bar
    k = len(METHODS)
    pos = [(t.get_position(), t.get_text()) for t in ax.texts]
    assert len(pos) == k * (k - 1) // 2
    assert all(x < y for (x, y), _ in pos)  # column < row: strictly below the diagonal
    # the image shows only the upper triangle
    img = np.asarray(ax.images[0].get_array().filled(np.nan))
    assert np.isnan(img[np.tril_indices(k)]).all()
    assert np.isfinite(img[np.triu_indices(k, 1)]).all()
    # weighting methods in reverse order, Q-learning first
    order = [t.get_text() for t in ax.get_yticklabels()]
    assert order == LABELS[:7] + LABELS[7:][::-1]
    # numbers are percentages of the reordered matrix; 98% or more in red
    idx = [METHODS.index(oplots.method_key(lab)) for lab in order]
    R = M[np.ix_(idx, idx)]
    for (x, y), txt in pos:
        assert txt == f"{100 * R[int(y), int(x)]:.0f}"
    red = [t for t in ax.texts if t.get_color() == "red"]
    assert [t.get_text() for t in red] == ["100"]  # Q-fe vs Q-ri
    _saves(fig, tmp_path, "congruence")


def test_congruence_heatmap_shape_error():
    with pytest.raises(ValueError, match="square"):
        oplots.congruence_heatmap(np.ones((3, 3)), METHODS[:2], "x")


# ----------------------------------------------------------------------------- CCT figures
@pytest.fixture(scope="module")
def cct_fits():
    """Long fit table (method, row, cate, decision) for 14 methods and 120 students."""
    rng = np.random.default_rng(3)
    n = 120
    grade = np.repeat([6.0, 7.0, 8.0, 9.0, 10.0, 11.0], n // 6)
    inc = (np.arange(n) % 3 != 0).astype(float)
    rows = []
    for k, m in enumerate(METHODS):
        cate = 0.02 * inc + 0.01 * (grade == 9) - 0.01 + 0.02 * rng.standard_normal(n) + 0.001 * k
        rows.append(pd.DataFrame({"method": m, "row": np.arange(n), "cate": cate,
                                  "decision": (cate > 0).astype(float)}))
    fits = pd.concat(rows, ignore_index=True).sample(frac=1, random_state=1)  # any row order
    return fits, grade, inc


def _wide(fits, col="decision"):
    return fits.pivot(index="row", columns="method", values=col).sort_index()


def _title_text(fig):
    return fig._suptitle.get_text() if fig._suptitle is not None else fig.axes[0].get_title()


@pytest.mark.parametrize("synthetic", [True, False])
def test_recommended_shares(cct_fits, tmp_path, synthetic):
    fits, _, _ = cct_fits
    fig = cplots.recommended_shares(fits, synthetic=synthetic)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    w = _wide(fits)[list(cplots.CCT_ORDER)]
    share = 100 * w.mean().to_numpy()
    bars = ax.patches
    np.testing.assert_allclose([b.get_height() for b in bars[:14]], share)
    np.testing.assert_allclose([b.get_height() for b in bars[14:28]], 100 - share)
    assert [t.get_text() for t in ax.texts] == [f"{s:.1f}" for s in share]
    assert ("SYNTHETIC DATA" in _title_text(fig)) is synthetic
    _saves(fig, tmp_path, f"shares_{synthetic}")


def test_cct_congruence(cct_fits, tmp_path):
    fits, _, _ = cct_fits
    fig = cplots.congruence(fits, synthetic=True)
    assert len(fig.axes) == 2
    assert "SYNTHETIC DATA" in fig.axes[0].get_title()
    k = 14
    assert len(fig.axes[0].texts) == k * (k - 1) // 2
    assert "SYNTHETIC DATA" not in cplots.congruence(fits, synthetic=False).axes[0].get_title()
    _saves(fig, tmp_path, "cct_congruence")


def test_recommended_by_income(cct_fits, tmp_path):
    fits, _, inc = cct_fits
    fig = cplots.recommended_by_income(fits, inc, synthetic=True)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    D = _wide(fits)[list(cplots.CCT_ORDER)].to_numpy() == 1
    n_low = (D & (inc[:, None] == 1)).sum(axis=0)
    n_high = (D & (inc[:, None] == 0)).sum(axis=0)
    np.testing.assert_array_equal([b.get_height() for b in ax.patches[:14]], n_low)
    np.testing.assert_array_equal([b.get_height() for b in ax.patches[14:28]], n_high)
    assert [t.get_text() for t in ax.texts] == [f"{100 * a / (a + b):.1f}" for a, b in zip(n_low, n_high)]
    assert "SYNTHETIC DATA" in _title_text(fig)
    with pytest.raises(ValueError, match="inc_380"):
        cplots.recommended_by_income(fits, inc[:-1])
    _saves(fig, tmp_path, "income")


def test_benefit_by_grade(cct_fits, tmp_path):
    fits, grade, _ = cct_fits
    fig = cplots.benefit_by_grade(fits, grade, synthetic=True)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 4
    assert [a.get_title() for a in axes] == ["Q-dm", "Q-dm-rs", "W-noaug", "WS-augID"]
    s = _wide(fits, "cate")["q-dm-rs"].to_numpy()
    expected = [f"{100 * np.mean(s[grade == g] > 0):.0f}%" for g in (6, 7, 8, 9, 10, 11)]
    assert [t.get_text() for t in axes[1].texts] == expected
    assert [t.get_text() for t in axes[1].get_xticklabels()] == ["6", "7", "8", "9", "10", "11"]
    assert "SYNTHETIC DATA" in _title_text(fig)
    with pytest.raises(ValueError, match="no scores"):
        cplots.benefit_by_grade(fits[fits["method"] != "ws-augid"], grade)
    _saves(fig, tmp_path, "grade")


def test_treated_share_hist(tmp_path):
    frame = pd.DataFrame({"school_code": np.repeat([1.0, 2.0, 3.0, 4.0], [4, 5, 2, 10]),
                          "trt": np.r_[[1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 0], [1] * 7 + [0] * 3]})
    fig = cplots.treated_share_hist(frame, synthetic=True)
    assert len(fig.axes) == 1
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sum(heights) == 4  # one count per school
    assert "SYNTHETIC DATA" in _title_text(fig)
    assert "SYNTHETIC DATA" not in _title_text(cplots.treated_share_hist(frame, synthetic=False))
    _saves(fig, tmp_path, "treated")
