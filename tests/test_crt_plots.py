"""CRT-CATE figures: structure (panels, boxes, reference lines) and saving to PNG and PDF."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from clusterhte.evaluate import crt_metrics as cm  # noqa: E402
from clusterhte.plots import crt as pc, save_figure  # noqa: E402
from clusterhte.simulate import crt_designs as cd  # noqa: E402

CELLS = [c.name for c in cd.grid(M=[30], icc=[0.05], f0=["lin"], tau=["hom", "lin"], sensitivity=False)] + \
    ["M60_s20_icc0.2_f0lin_tauhom"]
METHODS = ["gamm", "ribart", "cf", "my-method"]     # deliberately out of display order


@pytest.fixture(scope="module")
def per_rep():
    rng = np.random.default_rng(0)
    rows = []
    for cell in CELLS:
        for k, m in enumerate(METHODS):
            for r in range(5):
                rows += [(cell, r, m, "pehe_out", 0.3 + 0.1 * k + 0.05 * rng.normal()),
                         (cell, r, m, "coverage", np.nan if m == "cf" else 0.9 + 0.02 * rng.normal()),
                         (cell, r, m, "width", 1.0 + 0.1 * k),
                         (cell, r, m, "seconds", 10.0 ** k * (1 + 0.1 * rng.random())),
                         (cell, r, m, "failed", 0.0)]
    return pd.DataFrame(rows, columns=["cell", "rep", "method", "metric", "value"])


def _xlabels(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


def test_metric_by_method_boxplots(per_rep):
    fig = pc.metric_by_method(per_rep, "pehe_out")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(CELLS)
    # registered methods in registry order, unknown ones after; same order in every panel
    for ax in fig.axes:
        assert _xlabels(ax) == ["riBART", "CF", "GAMM", "my-method"]
        assert len(ax.patches) == len(METHODS)          # one box per method
    assert fig.axes[0].get_title().startswith("M=30, N~U{10..30}, ICC=0.05")
    assert fig.axes[-1].get_title().startswith("M=60, N=20, ICC=0.2")
    assert "PEHE" in fig.axes[0].get_ylabel() and "SD units" in fig.axes[0].get_ylabel()
    assert len(fig.legends) == 1 and len(fig.legends[0].get_patches()) == len(METHODS)
    assert fig._suptitle is not None


def test_coverage_has_nominal_line_and_marks_missing_methods(per_rep):
    fig = pc.metric_by_method(per_rep, "coverage")
    for ax in fig.axes:
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), 0.95)
        assert len(ax.patches) == len(METHODS) - 1        # CF has no intervals
        assert [t.get_text() for t in ax.texts] == ["n/a"]
        assert 0.85 >= ax.get_ylim()[0] >= 0.0 and ax.get_ylim()[1] == pytest.approx(1.02)
    assert "nominal 0.95" in [t.get_text() for t in fig.legends[0].get_texts()]
    fig = pc.metric_by_method(per_rep, "width", kind="point")
    for ax in fig.axes:
        assert len(ax.containers) == len(METHODS)          # one error bar per method
        assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]


def test_all_missing_metric_gives_a_note_and_selection_works(per_rep):
    pr = per_rep.copy()
    pr.loc[pr.metric == "coverage", "value"] = np.nan
    fig = pc.metric_by_method(pr, "coverage", cells=CELLS[:2], methods=["cf", "gamm"], ncols=1)
    assert len(fig.axes) == 2
    assert "no values" in fig.axes[0].texts[0].get_text()
    assert _xlabels(fig.axes[1]) == ["CF", "GAMM"]


def test_runtime_vs_pehe(per_rep):
    summary = cm.aggregate(per_rep)
    fig = pc.runtime_vs_pehe(summary)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "seconds" in ax.get_xlabel() and "PEHE" in ax.get_ylabel()
    # per method: one collection of cell points and one mean point, one text label
    assert len(ax.collections) == 2 * len(METHODS)
    assert sorted(t.get_text() for t in ax.texts) == sorted(["riBART", "CF", "GAMM", "my-method"])
    mean_pts = {t.get_text(): t.xy for t in ax.texts}
    assert mean_pts["CF"][0] == pytest.approx(10 * np.exp(np.mean(np.log(
        summary[(summary.method == "cf") & (summary.metric == "seconds")]["mean"] / 10))))
    assert len(fig.legends) == 1


def test_bad_input_is_refused(per_rep):
    with pytest.raises(ValueError, match="pehe_in"):
        pc.metric_by_method(per_rep, "pehe_in")
    with pytest.raises(ValueError, match="kind"):
        pc.metric_by_method(per_rep, "pehe_out", kind="violin")
    with pytest.raises(ValueError, match="method"):
        pc.metric_by_method(per_rep.drop(columns="method"), "pehe_out")
    with pytest.raises(ValueError, match="seconds"):
        pc.runtime_vs_pehe(cm.aggregate(per_rep[per_rep.metric != "seconds"]))


def test_save_png_and_pdf(per_rep, tmp_path):
    summary = cm.aggregate(per_rep)
    for name, fig in (("pehe", pc.metric_by_method(per_rep, "pehe_out")),
                      ("runtime", pc.runtime_vs_pehe(summary))):
        paths = [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]
        save_figure(fig, paths)
        assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert paths[1].read_bytes()[:5] == b"%PDF-"
