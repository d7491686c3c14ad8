"""Figures of the CRT-CATE simulation (spec ``crt_cate.md`` §4.4).

- :func:`metric_by_method`: one metric (PEHE, coverage, interval width, ...) by method, one panel
  per design cell, the same method order and colours in every panel; boxplots over replicates
  (``kind="box"``) or the mean ± 2 Monte-Carlo SE (``kind="point"``). Coverage panels carry a
  dashed line at the nominal 0.95.
- :func:`runtime_vs_pehe`: mean seconds per fit (log scale) against mean PEHE, one colour per
  method: a small point per design cell and a large labelled point for the average over cells.

The paper's figures are not public; these layouts are the project's. Every function takes the tidy
tables of :mod:`clusterhte.evaluate.crt_metrics` and returns a :class:`matplotlib.figure.Figure`
built without pyplot (no GUI backend, nothing shown); save it with
:func:`clusterhte.plots.save_figure`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

# Registry name -> the paper's label, in the order methods are shown.
METHOD_LABELS = {
    "ribart": "riBART", "mixedbart": "mixedBART", "stan4bart": "stan4bart", "mbcf": "MBCF",
    "cf": "CF", "merf": "MERF", "megb": "MEGB", "gpboost": "GPBoost", "mermboost": "mermboost",
    "gamm": "GAMM", "lmm": "LMM",
}
METHOD_ORDER = tuple(METHOD_LABELS)
_PALETTE = ("#1f77b4", "#aec7e8", "#17becf", "#2ca02c", "#ff7f0e", "#d62728", "#ff9896",
            "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#c5b0d5", "#c49c94")
METHOD_COLORS = dict(zip(METHOD_ORDER, _PALETTE))

METRIC_LABELS = {
    "pehe_in": "PEHE, training clusters (outcome SD units)",
    "pehe_out": "PEHE, new clusters (outcome SD units)",
    "bias": "Bias of the CATE (outcome SD units)",
    "abs_bias": "|Bias| of the CATE (outcome SD units)",
    "ate_error": "ATE error (outcome SD units)",
    "ate_covered": "Coverage of the 95% ATE interval",
    "coverage": "Coverage of 95% CATE intervals",
    "coverage_out": "Coverage of 95% CATE intervals, new clusters",
    "width": "Width of 95% CATE intervals (outcome SD units)",
    "width_out": "Width of 95% CATE intervals, new clusters (outcome SD units)",
    "cluster_pehe": "PEHE of cluster-average CATEs (outcome SD units)",
    "seconds": "Seconds per fit",
    "failed": "Share of failed fits",
}
NOMINAL = {"coverage": 0.95, "coverage_out": 0.95, "ate_covered": 0.95}
_ZERO_LINE = {"bias", "ate_error"}


def method_label(m) -> str:
    """The paper's label of a method given by registry name (unknown names unchanged)."""
    return METHOD_LABELS.get(str(m).lower(), str(m))


def ordered_methods(methods) -> list[str]:
    """``methods`` in the display order: registered CRT methods first, then others sorted."""
    ms = {str(m) for m in methods}
    known = [m for m in METHOD_ORDER if m in ms]
    return known + sorted(ms - set(known))


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method (registered ones keep theirs across figures)."""
    extra = [c for c in _PALETTE if c not in {METHOD_COLORS[m] for m in methods if m in METHOD_COLORS}]
    out, k = {}, 0
    for m in methods:
        if m in METHOD_COLORS:
            out[m] = METHOD_COLORS[m]
        else:
            out[m] = extra[k % len(extra)] if extra else "#333333"
            k += 1
    return out


def _cell_sort_key(cell: str):
    from clusterhte.simulate.crt_designs import F0_LEVELS, TAU_LEVELS, CrtCell
    try:
        c = CrtCell.from_name(cell)
    except ValueError:
        return (1, str(cell))
    size = (0, 0) if isinstance(c.size, str) else (1, c.size)
    return (0, c.M, size, c.icc, F0_LEVELS.index(c.f0), TAU_LEVELS.index(c.tau))


def cell_title(cell: str) -> str:
    """A two-line panel title for a cell name (unparseable names unchanged)."""
    from clusterhte.simulate.crt_designs import CrtCell
    try:
        c = CrtCell.from_name(cell)
    except ValueError:
        return str(cell)
    size = f"N~U{{{c.size[1:].replace('-', '..')}}}" if isinstance(c.size, str) else f"N={c.size}"
    return f"M={c.M}, {size}, ICC={c.icc:g}\nf0 {c.f0}, τ {c.tau}"


def _ordered_cells(cells) -> list[str]:
    return sorted({str(c) for c in cells}, key=_cell_sort_key)


def _method_legend(fig: Figure, methods, colors, extra=(), **kw):
    handles = [Patch(facecolor=colors[m], edgecolor="black", linewidth=0.5, label=method_label(m))
               for m in methods] + list(extra)
    return fig.legend(handles=handles, title="Method", loc="center left", bbox_to_anchor=(1.0, 0.5),
                      frameon=False, **kw)


def _grid(fig: Figure, n: int, ncols: int | None):
    ncols = ncols or min(n, 6)
    nrows = -(-n // ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    for k, ax in enumerate(flat[:n]):
        below = k + ncols
        if below < n:  # not the lowest panel of its column
            ax.tick_params(labelbottom=False)
        else:
            ax.tick_params(labelbottom=True)
    return flat[:n], nrows, ncols


def metric_by_method(per_rep: pd.DataFrame, metric: str, kind: str = "box",
                     cells: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                     ncols: int | None = None) -> Figure:
    """``metric`` by method, one panel per design cell (boxplots, or mean ± 2·MCSE points).

    ``per_rep``: the per-replicate metric table (``cell, rep, method, metric, value``; without a
    ``cell`` column everything is one panel). ``cells``/``methods`` select and order panels and
    methods (default: all, cells in design order, methods in the registry order). Coverage metrics
    get a dashed line at 0.95, bias metrics a dotted line at 0.
    """
    need = ["method", "metric", "value"]
    missing = [c for c in need if c not in per_rep.columns]
    if missing:
        raise ValueError(f"per-replicate metric table: missing column(s) {missing}; "
                         "expected cell, rep, method, metric, value")
    if kind not in ("box", "point"):
        raise ValueError(f"kind must be 'box' or 'point', got {kind!r}")
    m = per_rep[per_rep["metric"] == metric]
    if m.empty:
        known = sorted(per_rep["metric"].unique())
        raise ValueError(f"no rows with metric {metric!r} in the per-replicate table; metrics present: {known}")
    m = m.assign(cell=m["cell"].astype(str) if "cell" in m.columns else "all",
                 method=m["method"].astype(str), value=m["value"].astype(float))
    cell_list = _ordered_cells(m["cell"].unique()) if cells is None else [str(c) for c in cells]
    meth = ordered_methods(m["method"].unique()) if methods is None else [str(x) for x in methods]
    colors = method_colors(meth)
    pos = {k: i for i, k in enumerate(meth)}
    ncols_eff = ncols or min(len(cell_list), 6)
    nrows = -(-len(cell_list) // ncols_eff)
    width = max(6.0, ncols_eff * max(2.4, 0.32 * len(meth) + 0.8)) + 1.6
    fig = Figure(figsize=(width, 2.6 * nrows + 1.4), layout="constrained")
    axes, _, _ = _grid(fig, len(cell_list), ncols_eff)
    groups = {c: g for c, g in m.groupby("cell", sort=False)}
    finite = m["value"].to_numpy()[np.isfinite(m["value"].to_numpy())]
    # one y range for all coverage panels, from 0.85 or lower when some value is lower
    cov_bottom = max(0.0, min(0.85, finite.min() - 0.03)) if finite.size else 0.0
    ylabel = METRIC_LABELS.get(metric, metric)
    for k, (ax, cell) in enumerate(zip(axes, cell_list)):
        g = groups.get(cell, m.iloc[:0])
        g = g[np.isfinite(g["value"].to_numpy())]
        vals = {x: v["value"].to_numpy() for x, v in g.groupby("method", sort=False)}
        shown = [x for x in meth if x in vals and vals[x].size]
        if kind == "box" and shown:
            bp = ax.boxplot([vals[x] for x in shown], positions=[pos[x] for x in shown], widths=0.65,
                            patch_artist=True, showfliers=True, medianprops=dict(color="black"),
                            flierprops=dict(markersize=2, alpha=0.5))
            for patch, x in zip(bp["boxes"], shown):
                patch.set_facecolor(colors[x])
                patch.set_alpha(0.9)
        elif shown:
            mean = np.array([vals[x].mean() for x in shown])
            n = np.array([vals[x].size for x in shown])
            sd = np.array([vals[x].std(ddof=1) if vals[x].size > 1 else 0.0 for x in shown])
            mcse = sd / np.sqrt(n)
            for x, mu, se in zip(shown, mean, mcse):
                ax.errorbar(pos[x], mu, yerr=2 * se, fmt="o", color=colors[x], ecolor=colors[x],
                            capsize=3, markersize=5, markeredgecolor="black", markeredgewidth=0.5)
        if not shown:
            ax.text(0.5, 0.5, "no values\n(no method reports this metric)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8, color="0.4")
        else:
            for x in meth:
                if x not in shown:  # e.g. a method without intervals in a coverage panel
                    ax.text(pos[x], 0.03, "n/a", ha="center", va="bottom", fontsize=6.5, color="0.4",
                            rotation=90, transform=ax.get_xaxis_transform())
        if metric in NOMINAL:
            ax.axhline(NOMINAL[metric], color="black", linestyle="--", linewidth=0.9)
            ax.set_ylim(cov_bottom, 1.02)
        if metric in _ZERO_LINE:
            ax.axhline(0.0, color="black", linestyle=":", linewidth=0.8)
        ax.set_xlim(-0.7, len(meth) - 0.3)
        ax.set_xticks(range(len(meth)), [method_label(x) for x in meth], rotation=90, fontsize=8)
        ax.set_title(cell_title(cell), fontsize=8.5)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        if k % ncols_eff == 0:
            ax.set_ylabel(ylabel if len(ylabel) < 30 else ylabel.replace(" (", "\n("), fontsize=8.5)
    what = "over replicates" if kind == "box" else "mean ± 2 Monte-Carlo SE"
    fig.suptitle(f"{ylabel} by method and design cell ({what})", fontsize=11)
    extra = ([Line2D([], [], color="black", linestyle="--", linewidth=0.9,
                     label=f"nominal {NOMINAL[metric]:g}")] if metric in NOMINAL else [])
    _method_legend(fig, meth, colors, extra=extra)
    return fig


def runtime_vs_pehe(summary: pd.DataFrame, metric: str = "pehe_out",
                    methods: Sequence[str] | None = None) -> Figure:
    """Mean seconds per fit (log scale) against mean ``metric`` (default out-of-sample PEHE).

    ``summary``: the aggregated table (``method, metric, mean`` and, optionally, ``cell``). One
    small point per method and cell, and one large labelled point per method at the mean over cells.
    """
    need = ["method", "metric", "mean"]
    missing = [c for c in need if c not in summary.columns]
    if missing:
        raise ValueError(f"summary table: missing column(s) {missing}; expected cell, method, metric, mean")
    s = summary.assign(cell=summary["cell"].astype(str) if "cell" in summary.columns else "all",
                       method=summary["method"].astype(str))
    for need_metric in ("seconds", metric):
        if not (s["metric"] == need_metric).any():
            raise ValueError(f"summary table has no rows with metric {need_metric!r}; "
                             f"metrics present: {sorted(s['metric'].unique())}")
    wide = (s[s["metric"].isin(["seconds", metric])]
            .pivot_table(index=["cell", "method"], columns="metric", values="mean", aggfunc="first")
            .reset_index())
    wide = wide[np.isfinite(wide["seconds"]) & np.isfinite(wide[metric]) & (wide["seconds"] > 0)]
    if wide.empty:
        raise ValueError(f"summary table: no method has both a positive mean 'seconds' and a finite {metric!r}")
    meth = ordered_methods(wide["method"].unique()) if methods is None else [str(x) for x in methods]
    wide = wide[wide["method"].isin(meth)]
    colors = method_colors(meth)
    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    many_cells = wide["cell"].nunique() > 1
    avg = wide.groupby("method")[["seconds", metric]].agg(
        seconds=("seconds", lambda v: float(np.exp(np.mean(np.log(v))))), val=(metric, "mean"))
    for x in meth:
        if x not in avg.index:
            continue
        col = colors[x]
        if many_cells:
            w = wide[wide["method"] == x]
            ax.scatter(w["seconds"], w[metric], s=14, color=col, alpha=0.35, linewidths=0)
        sx, sy = avg.loc[x, "seconds"], avg.loc[x, "val"]
        ax.scatter([sx], [sy], s=70, color=col, edgecolors="black", linewidths=0.6, zorder=3)
        ax.annotate(method_label(x), (sx, sy), xytext=(5, 4), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("Mean wall-clock seconds per fit (log scale)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"Runtime against accuracy ({METRIC_LABELS.get(metric, metric).split(' (')[0]})", fontsize=11)
    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor=colors[x], markeredgecolor="black",
                      markersize=7, label=method_label(x)) for x in meth if x in avg.index]
    if many_cells:
        handles += [Line2D([], [], marker="o", linestyle="", color="0.5", alpha=0.35, markersize=4,
                           label="one design cell"),
                    Line2D([], [], marker="o", linestyle="", markerfacecolor="0.5", markeredgecolor="black",
                           markersize=7, label="mean over cells\n(geometric for seconds)")]
    fig.legend(handles=handles, title="Method", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig
