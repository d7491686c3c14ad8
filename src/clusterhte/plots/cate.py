"""Figures of the CATEs of several methods on one trial (spec ``crt_cate.md`` §5.3, TASSH).

- :func:`cate_distribution`: the distribution of the patient-level CATEs, one violin per method
  with the median and quartiles, a line at the decision cutoff and the ATE as a diamond.
- :func:`subgroup_forest`: subgroup-average CATEs (rows = variable / group, one marker per
  method), with intervals where the table has them (e.g. the model-free difference in means).
- :func:`cluster_caterpillar`: cluster-average CATEs sorted within each method panel, with
  intervals where present, and the method's ATE as a dashed line.
- :func:`agreement_heatmap`: method x method matrix of the Spearman correlation of the CATEs
  (lower triangle) and the decision agreement (upper triangle).

Each function takes the tidy tables of :mod:`clusterhte.evaluate.summaries` (or the fits table) and
returns a :class:`matplotlib.figure.Figure` built without pyplot (Agg canvas, nothing shown); save
it with :func:`clusterhte.plots.save_figure`. Methods appear in the project's order and colours
(:mod:`clusterhte.plots.crt`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from clusterhte.data.trial import TrialDataError
from clusterhte.plots.crt import method_colors, method_label, ordered_methods

__all__ = ["cate_distribution", "subgroup_forest", "cluster_caterpillar", "agreement_heatmap"]


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _need(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise TrialDataError(f"{what}: missing column(s) {missing}; present: {list(df.columns)}")
    if len(df) == 0:
        raise TrialDataError(f"{what}: the table is empty")


def _order(df: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    present = set(df["method"].astype(str))
    if methods is None:
        return ordered_methods(present)
    absent = [m for m in methods if m not in present]
    if absent:
        raise TrialDataError(f"method(s) {absent} not in the table (present: {sorted(present)})")
    return list(methods)


def _outcome_label(outcome: str, larger_is_better: bool) -> str:
    side = "larger is better" if larger_is_better else "below 0 = benefit"
    return f"CATE on {outcome} ({side})"


def cate_distribution(fits: pd.DataFrame, methods: Sequence[str] | None = None, cutoff: float = 0.0,
                      larger_is_better: bool = True, outcome: str = "the outcome",
                      title: str | None = None) -> Figure:
    """Violin plot of each method's patient-level CATEs (``fits``: ``method``, ``cate``)."""
    _need(fits, ["method", "cate"], "cate_distribution")
    ms = _order(fits, methods)
    colors = method_colors(ms)
    data = [fits.loc[fits["method"].astype(str) == m, "cate"].to_numpy(dtype=float) for m in ms]
    fig = _figure(max(4.5, 0.75 * len(ms) + 2), 4.2)
    ax = fig.add_subplot()
    pos = np.arange(1, len(ms) + 1)
    spread = [d for d in data if np.ptp(d) > 0]
    if spread:
        idx = [i for i, d in enumerate(data) if np.ptp(d) > 0]
        parts = ax.violinplot([data[i] for i in idx], positions=pos[idx], widths=0.8,
                              showextrema=False)
        for i, body in zip(idx, parts["bodies"]):
            body.set_facecolor(colors[ms[i]]); body.set_edgecolor("black"); body.set_alpha(0.7)
    q1, med, q3 = (np.array([np.quantile(d, q) for d in data]) for q in (0.25, 0.5, 0.75))
    ax.vlines(pos, q1, q3, color="black", lw=3, label="quartiles")
    ax.scatter(pos, med, color="white", edgecolor="black", zorder=3, s=22, label="median")
    ax.scatter(pos, [d.mean() for d in data], marker="D", color="black", zorder=3, s=18,
               label="ATE (mean CATE)")
    ax.axhline(cutoff, color="grey", ls="--", lw=1)
    ax.set_xticks(pos, [method_label(m) for m in ms], rotation=30, ha="right")
    ax.set_ylabel(_outcome_label(outcome, larger_is_better))
    ax.set_xlim(0.4, len(ms) + 0.6)
    ax.legend(loc="best", fontsize="small", frameon=False)
    if title:
        ax.set_title(title)
    return fig


def subgroup_forest(table: pd.DataFrame, methods: Sequence[str] | None = None, cutoff: float = 0.0,
                    larger_is_better: bool = True, outcome: str = "the outcome",
                    title: str | None = None) -> Figure:
    """Forest plot of subgroup-average CATEs.

    ``table``: ``method, variable, group, cate`` and optionally ``lower, upper`` (drawn where
    finite) and ``n``; e.g. :func:`~clusterhte.evaluate.summaries.subgroup_table` stacked with
    :func:`~clusterhte.evaluate.summaries.subgroup_difference_in_means`. One row per (variable,
    group) in table order, methods dodged vertically within the row.
    """
    _need(table, ["method", "variable", "group", "cate"], "subgroup_forest")
    ms = _order(table, methods)
    colors = method_colors(ms)
    keys = list(dict.fromkeys(zip(table["variable"].astype(str), table["group"].astype(str))))
    fig = _figure(7.0, 0.3 * len(keys) * max(1, len(ms)) ** 0.5 + 1.5)
    ax = fig.add_subplot()
    y0 = np.arange(len(keys))[::-1].astype(float)
    ypos = dict(zip(keys, y0))
    off = np.linspace(-0.3, 0.3, len(ms)) if len(ms) > 1 else np.zeros(1)
    has_lo = {"lower", "upper"} <= set(table.columns)
    handles = []
    for k, m in enumerate(ms):
        t = table.loc[table["method"].astype(str) == m]
        y = np.array([ypos[(v, g)] for v, g in zip(t["variable"].astype(str), t["group"].astype(str))]) + off[k]
        x = t["cate"].to_numpy(dtype=float)
        if has_lo:
            lo, hi = t["lower"].to_numpy(dtype=float), t["upper"].to_numpy(dtype=float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.hlines(y[ok], lo[ok], hi[ok], color=colors[m], lw=1.2)
        ax.plot(x, y, "o", color=colors[m], ms=5, mec="black", mew=0.4)
        handles.append(Line2D([], [], marker="o", ls="", color=colors[m], mec="black", label=method_label(m)))
    ax.axvline(cutoff, color="grey", ls="--", lw=1)
    labels = []
    for v, g in keys:
        n = table.loc[(table["variable"].astype(str) == v) & (table["group"].astype(str) == g), "n"].max() \
            if "n" in table.columns else None
        labels.append(f"{v}: {g}" + (f" (n={int(n)})" if n is not None and np.isfinite(n) else ""))
    ax.set_yticks(y0, labels)
    for b in y0[:-1] - 0.5:
        ax.axhline(b, color="0.9", lw=0.6, zorder=0)
    ax.set_xlabel(_outcome_label(outcome, larger_is_better) + "; bars: 95% interval where available")
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="Method")
    if title:
        ax.set_title(title)
    return fig


def cluster_caterpillar(table: pd.DataFrame, methods: Sequence[str] | None = None, cutoff: float = 0.0,
                        larger_is_better: bool = True, outcome: str = "the outcome", ncols: int | None = None,
                        title: str | None = None) -> Figure:
    """Caterpillar plot of cluster-average CATEs, one panel per method, clusters sorted by CATE.

    ``table``: ``method, cluster, cate`` and optionally ``lower, upper`` (e.g.
    :func:`~clusterhte.evaluate.summaries.cluster_average`). The dashed black line is the mean of
    the cluster averages weighted by ``n`` when present (the method's ATE), the grey one the cutoff.
    """
    _need(table, ["method", "cluster", "cate"], "cluster_caterpillar")
    ms = _order(table, methods)
    colors = method_colors(ms)
    ncols = ncols or min(len(ms), 4)
    nrows = -(-len(ms) // ncols)
    fig = _figure(3.2 * ncols, 2.6 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    flat = list(axes.ravel())
    for ax in flat[len(ms):]:
        fig.delaxes(ax)
    has_lo = {"lower", "upper"} <= set(table.columns)
    for ax, m in zip(flat, ms):
        t = table.loc[table["method"].astype(str) == m].sort_values("cate", kind="stable")
        x = np.arange(len(t))
        c = t["cate"].to_numpy(dtype=float)
        if has_lo:
            lo, hi = t["lower"].to_numpy(dtype=float), t["upper"].to_numpy(dtype=float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.vlines(x[ok], lo[ok], hi[ok], color=colors[m], lw=1)
        ax.plot(x, c, "o", color=colors[m], mec="black", mew=0.4, ms=4)
        w = t["n"].to_numpy(dtype=float) if "n" in t.columns else np.ones(len(t))
        ax.axhline(np.average(c, weights=w), color="black", ls="--", lw=1)
        ax.axhline(cutoff, color="grey", ls=":", lw=1)
        ax.set_title(method_label(m))
        ax.set_xticks([])
        ax.set_xlabel("clusters, sorted")
    for row in axes:
        row[0].set_ylabel("cluster-average CATE")
    fig.suptitle(title or _outcome_label(outcome, larger_is_better))
    return fig


def agreement_heatmap(table: pd.DataFrame, methods: Sequence[str] | None = None,
                      title: str | None = None) -> Figure:
    """Heatmap of method agreement: Spearman correlation of the CATEs below the diagonal, share of
    identical treatment decisions above it (``table``: the output of
    :func:`~clusterhte.evaluate.summaries.agreement_matrix`). Cells are annotated with the value;
    NaN cells (a constant CATE) are blank."""
    _need(table, ["method_a", "method_b", "spearman", "decision_agreement"], "agreement_heatmap")
    present = set(table["method_a"].astype(str))
    ms = ordered_methods(present) if methods is None else list(methods)
    absent = [m for m in ms if m not in present]
    if absent:
        raise TrialDataError(f"agreement_heatmap: method(s) {absent} not in the table")
    rho = table.pivot(index="method_a", columns="method_b", values="spearman").reindex(index=ms, columns=ms)
    agr = table.pivot(index="method_a", columns="method_b", values="decision_agreement").reindex(index=ms, columns=ms)
    k = len(ms)
    lower = np.tril(np.ones((k, k), bool), -1)
    upper = np.triu(np.ones((k, k), bool), 1)
    M = np.full((k, k), np.nan)
    M[lower] = rho.to_numpy(dtype=float)[lower]
    A = np.full((k, k), np.nan)
    A[upper] = agr.to_numpy(dtype=float)[upper]
    fig = _figure(0.6 * k + 3.2, 0.6 * k + 1.8)
    ax = fig.add_subplot()
    im1 = ax.imshow(np.ma.masked_invalid(M), cmap="RdBu_r", vmin=-1, vmax=1)
    im2 = ax.imshow(np.ma.masked_invalid(A), cmap="Greens", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            v = M[i, j] if i > j else A[i, j] if i < j else np.nan
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.75 else "black")
    ax.set_xticks(range(k), [method_label(m) for m in ms], rotation=45, ha="right")
    ax.set_yticks(range(k), [method_label(m) for m in ms])
    for i in range(k):
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, color="0.85"))
    fig.colorbar(im1, ax=ax, shrink=0.7, label="Spearman correlation (below diagonal)")
    fig.colorbar(im2, ax=ax, shrink=0.7, label="decision agreement (above diagonal)")
    if title:
        ax.set_title(title)
    return fig
