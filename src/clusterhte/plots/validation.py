"""Figures of the validation tables (:mod:`clusterhte.evaluate.validation`) of one trial.

- :func:`calibration_plot`: per method, the GATES estimate (doubly robust ATE of each quantile
  group of out-of-fold CATEs, with its CR2 interval) against the group's mean predicted CATE, with
  the 45-degree line of perfect calibration; the calibration test's differential p-value in the
  panel title.
- :func:`toc_curves`: TOC(q) of each method's ranking with pointwise bootstrap bands.
- :func:`gates_forest`: group ATEs and top - bottom differences, one row per method x group.
- :func:`loss_differences`: each method's DR- and R-loss difference from the best, with
  cluster-bootstrap intervals.

Every function returns a :class:`matplotlib.figure.Figure` (Agg canvas, nothing shown).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clusterhte.plots.crt import method_colors, method_label, ordered_methods

__all__ = ["calibration_plot", "toc_curves", "gates_forest", "loss_differences", "FIGURES"]

FIGURES = ["validation_calibration", "validation_toc", "validation_gates", "validation_loss"]


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _panels(fig: Figure, n: int, ncols: int = 4):
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return axes.ravel()[:n]


def _empty(title: str) -> Figure:
    fig = _figure(5, 3)
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, "no method validated", ha="center", va="center")
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


def calibration_plot(gates: pd.DataFrame, calibration: pd.DataFrame, outcome: str = "the outcome",
                     title: str = "") -> Figure:
    """GATES estimate vs mean predicted CATE per quantile group, per method."""
    g = gates[gates["group"] != "top_minus_bottom"]
    methods = ordered_methods(g["method"].unique())
    if not methods:
        return _empty(title)
    fig = _figure(3.2 * min(4, len(methods)), 3.0 * -(-len(methods) // 4))
    cols = method_colors(methods)
    for ax, m in zip(_panels(fig, len(methods)), methods):
        d = g[g["method"] == m]
        x, y = d["tau_mean"].to_numpy(float), d["estimate"].to_numpy(float)
        ax.errorbar(x, y, yerr=[y - d["lower"], d["upper"] - y], fmt="o", color=cols[m], capsize=3)
        lim = np.nanmin(np.r_[x, d["lower"]]), np.nanmax(np.r_[x, d["upper"]])
        ax.plot(lim, lim, "--", color="0.5", lw=1)
        ax.axhline(0, color="0.8", lw=0.8)
        c = calibration[(calibration["method"] == m) & (calibration["term"] == "differential")]
        p = c["p_value"].iloc[0] if len(c) else np.nan
        ax.set_title(f"{method_label(m)}  (p = {p:.2g})" if np.isfinite(p) else method_label(m), fontsize=9)
        ax.set_xlabel("mean predicted CATE of the group", fontsize=8)
        ax.set_ylabel(f"DR effect on {outcome}", fontsize=8)
    fig.suptitle(title or "Calibration: group effects vs predictions (out-of-fold)")
    return fig


def toc_curves(toc: pd.DataFrame, title: str = "") -> Figure:
    """TOC(q) with bands, one panel per method (benefit scale: above 0 = the top ranked benefit more)."""
    methods = ordered_methods(toc["method"].unique())
    if not methods:
        return _empty(title)
    fig = _figure(3.2 * min(4, len(methods)), 2.8 * -(-len(methods) // 4))
    cols = method_colors(methods)
    for ax, m in zip(_panels(fig, len(methods)), methods):
        d = toc[toc["method"] == m].sort_values("q")
        ax.fill_between(d["q"], d["lower"], d["upper"], color=cols[m], alpha=0.25, lw=0)
        ax.plot(d["q"], d["estimate"], color=cols[m])
        ax.axhline(0, color="0.4", lw=0.8, ls="--")
        ax.set_title(method_label(m), fontsize=9)
        ax.set_xlabel("share treated, by predicted benefit (q)", fontsize=8)
        ax.set_ylabel("TOC(q)", fontsize=8)
    fig.suptitle(title or "Targeting operator characteristic (out-of-fold ranking)")
    return fig


def gates_forest(gates: pd.DataFrame, outcome: str = "the outcome", title: str = "") -> Figure:
    """Forest plot of the group ATEs (and top - bottom) by method."""
    methods = ordered_methods(gates["method"].unique())
    if not methods:
        return _empty(title)
    rows = []
    for m in methods:
        d = gates[gates["method"] == m]
        rows += [(m, str(gr), r) for gr, (_, r) in zip(d["group"], d.iterrows())]
    fig = _figure(6.5, 0.22 * len(rows) + 1.2)
    ax = fig.add_subplot()
    cols = method_colors(methods)
    ypos = np.arange(len(rows))[::-1]
    for y, (m, gr, r) in zip(ypos, rows):
        mk = "D" if gr == "top_minus_bottom" else "o"
        ax.errorbar([r["estimate"]], [y], xerr=[[r["estimate"] - r["lower"]], [r["upper"] - r["estimate"]]],
                    fmt=mk, color=cols[m], capsize=2, ms=4)
    ax.axvline(0, color="0.4", lw=0.8, ls="--")
    ax.set_yticks(ypos, [f"{method_label(m)}: {'top − bottom' if gr == 'top_minus_bottom' else 'group ' + gr}"
                         for m, gr, _ in rows], fontsize=7)
    ax.set_xlabel(f"effect on {outcome} (doubly robust, CR2 95% interval)")
    fig.suptitle(title or "GATES: effect by quantile group of out-of-fold CATEs")
    return fig


def loss_differences(model_selection: pd.DataFrame, title: str = "") -> Figure:
    """Loss difference from the best method (0 = best), with cluster-bootstrap intervals."""
    losses = list(dict.fromkeys(model_selection["loss"]))
    if not losses:
        return _empty(title)
    n = model_selection["method"].nunique()
    fig = _figure(4.2 * len(losses), 0.3 * n + 1.4)
    for ax, loss in zip(_panels(fig, len(losses), len(losses)), losses):
        d = model_selection[model_selection["loss"] == loss].sort_values("difference", ascending=False)
        y = np.arange(len(d))
        ax.errorbar(d["difference"], y, xerr=[d["difference"] - d["lower"], d["upper"] - d["difference"]],
                    fmt="o", color="#1f4e79", capsize=2, ms=4)
        ax.axvline(0, color="0.4", lw=0.8, ls="--")
        ax.set_yticks(y, [method_label(m) for m in d["method"]], fontsize=8)
        ax.set_xlabel(f"{loss.upper()}-loss minus the best's", fontsize=8)
    fig.suptitle(title or "Model selection: loss difference from the best (cluster bootstrap 95%)")
    return fig
