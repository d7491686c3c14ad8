"""Figures of the multisite-OTR simulation (Suk & Park 2023, Section 5 and Appendix A).

- :func:`accuracy_boxplots`: Figures 1, 3, 5 -- accuracy of the 14 estimators over replicates, one
  panel row per sample size (J, n_j), the mean printed above each box, Q-learning and weighting
  estimators in two colours; each row has its own y range, as in the paper.
- :func:`metric_panels`: Figures 10–12, 14 -- accuracy, F1, rank correlation and AUC, one panel
  each, the mean over replicates per estimator and sample size with a 95% Monte-Carlo interval.
- :func:`congruence_heatmap`: Figures 2, 4, 7, 13, 15 -- pairwise agreement of the recommended
  decisions; upper triangle coloured, lower triangle the numbers in percent (values of at least
  ``highlight`` in red), weighting estimators listed in reverse order as the paper does.

The authors' repository has no plotting code (spec ``otr_multisite.md`` §5); the layouts follow
the paper's descriptions. Every function takes tidy tables and returns a
:class:`matplotlib.figure.Figure` built without pyplot (no GUI backend, nothing shown); save it with
:func:`clusterhte.plots.save_figure`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

# Registry name -> the paper's label, in the paper's order (Q-learning, then weighting).
METHOD_LABELS = {
    "q-base": "Q-base", "q-fe": "Q-fe", "q-ri": "Q-ri", "q-rs": "Q-rs", "q-dm": "Q-dm",
    "q-dm-ri": "Q-dm-ri", "q-dm-rs": "Q-dm-rs", "w-base": "W-base", "w-noaug": "W-noaug",
    "w-aug": "W-aug", "w-augid": "W-augID", "ws-noaug": "WS-noaug", "ws-aug": "WS-aug",
    "ws-augid": "WS-augID",
}
METHOD_ORDER = tuple(METHOD_LABELS)
METRIC_LABELS = {"accuracy": "Accuracy", "f1": "F1 score", "rank_corr": "Rank correlation", "auc": "AUC"}
GROUP_COLORS = {"Q": "#4C72B0", "W": "#DD8452"}


def method_key(m) -> str:
    """Registry name of a method given by name or paper label (``"W[S]-augID"`` too)."""
    s = str(m).strip()
    low = s.lower().replace("[s]", "s").replace("w_s", "ws")
    if low in METHOD_LABELS:
        return low
    raise ValueError(f"unknown OTR method {m!r}; known: {', '.join(METHOD_LABELS.values())}")


def method_label(m) -> str:
    """The paper's label of a method given by registry name or label."""
    return METHOD_LABELS[method_key(m)]


def method_group(m) -> str:
    """``"Q"`` for Q-learning estimators, ``"W"`` for weighting estimators (W and WS)."""
    return "Q" if method_key(m).startswith("q") else "W"


def ordered_methods(methods) -> list[str]:
    """Registry names of ``methods`` in the paper's order (unknown names raise)."""
    keys = {method_key(m) for m in methods}
    return [m for m in METHOD_ORDER if m in keys]


def design_title(design) -> str:
    """``"d1"`` -> ``"Design 1"`` (other names unchanged)."""
    d = str(design)
    return f"Design {d[1:]}" if d[:1].lower() == "d" and d[1:].isdigit() else str(design)


def _metric_rows(per_rep: pd.DataFrame, design, metric: str) -> pd.DataFrame:
    need = ["J", "n", "rep", "method", "metric", "value"]
    missing = [c for c in need if c not in per_rep.columns]
    if missing:
        raise ValueError(f"per-replicate metric table: missing column(s) {missing}; "
                         f"expected design, J, n, rep, method, metric, value")
    m = per_rep
    if "design" in m.columns and design is not None:
        m = m[m["design"].astype(str) == str(design)]
    m = m[m["metric"] == metric]
    if "other" in m.columns:
        m = m[m["other"].isna() | (m["other"].astype(str) == "")]
    m = m[np.isfinite(m["value"].to_numpy(dtype=float))]
    if m.empty:
        raise ValueError(f"no '{metric}' values for design {design!r} in the per-replicate metric table")
    m = m.assign(method=m["method"].map(method_key))
    return m


def _sizes(m: pd.DataFrame) -> list[tuple[int, int]]:
    return sorted({(int(j), int(n)) for j, n in zip(m["J"], m["n"])})


def _group_legend(fig_or_ax, **kw):
    handles = [Patch(facecolor=GROUP_COLORS["Q"], label="Q-learning"),
               Patch(facecolor=GROUP_COLORS["W"], label="Weighting")]
    return fig_or_ax.legend(handles=handles, **kw)


def accuracy_boxplots(per_rep: pd.DataFrame, design, metric: str = "accuracy") -> Figure:
    """Boxplots of ``metric`` over replicates by estimator, one row per sample size (Figures 1/3/5).

    ``per_rep``: columns ``design, J, n, rep, method, metric, value`` (method by registry name or
    paper label). The mean over replicates is printed above each box.
    """
    m = _metric_rows(per_rep, design, metric)
    sizes = _sizes(m)
    methods = ordered_methods(m["method"].unique())
    fig = Figure(figsize=(max(8.0, 0.75 * len(methods) + 1.5), 2.7 * len(sizes) + 0.6))
    axes = fig.subplots(len(sizes), 1, squeeze=False)[:, 0]
    for ax, (J, n) in zip(axes, sizes):
        cell = m[(m["J"] == J) & (m["n"] == n)]
        vals = [cell.loc[cell["method"] == k, "value"].to_numpy(dtype=float) for k in methods]
        pos = [i for i, v in enumerate(vals) if v.size]
        bp = ax.boxplot([vals[i] for i in pos], positions=pos, widths=0.6, patch_artist=True,
                        showfliers=True, flierprops=dict(markersize=2, alpha=0.5),
                        medianprops=dict(color="black"))
        for patch, i in zip(bp["boxes"], pos):
            patch.set_facecolor(GROUP_COLORS[method_group(methods[i])])
            patch.set_alpha(0.85)
        tr = blended_transform_factory(ax.transData, ax.transAxes)
        for i in pos:
            ax.text(i, 1.02, f"{np.mean(vals[i]):.3f}", transform=tr, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([METHOD_LABELS[k] for k in methods], rotation=45, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(f"(J, n) = ({J}, {n})", loc="left", fontsize=9, pad=14)
        ax.grid(axis="y", alpha=0.3)
    name = METRIC_LABELS.get(metric, metric)
    fig.suptitle(f"{name} of the estimators in {design_title(design)}")
    _group_legend(fig, loc="upper right", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def metric_panels(per_rep: pd.DataFrame, design,
                  metrics: Sequence[str] = ("accuracy", "f1", "rank_corr", "auc")) -> Figure:
    """Accuracy, F1, rank correlation and AUC by estimator and sample size (Figures 10–12, 14).

    One panel per metric: the mean over replicates of each estimator, one line per sample size
    (J, n), with a 95% Monte-Carlo interval (mean ± 1.96 SD/√reps).
    """
    metrics = list(metrics)
    tables = {mt: _metric_rows(per_rep, design, mt) for mt in metrics}
    sizes = sorted(set().union(*(_sizes(t) for t in tables.values())))
    methods = ordered_methods(set().union(*(set(t["method"]) for t in tables.values())))
    ncol = 2 if len(metrics) > 1 else 1
    nrow = int(np.ceil(len(metrics) / ncol))
    fig = Figure(figsize=(6.2 * ncol, 3.6 * nrow + 0.7))
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]
    x = np.arange(len(methods))
    for ax, mt in zip(axes, metrics):
        t = tables[mt]
        g = t.groupby(["J", "n", "method"])["value"].agg(["mean", "std", "count"])
        for s, (J, n) in enumerate(sizes):
            mean = np.array([g["mean"].get((J, n, k), np.nan) for k in methods])
            se = np.array([g["std"].get((J, n, k), np.nan) / np.sqrt(max(g["count"].get((J, n, k), 1), 1))
                           for k in methods])
            off = (s - (len(sizes) - 1) / 2) * 0.08
            ax.errorbar(x + off, mean, yerr=1.96 * np.nan_to_num(se), marker="o", ms=3.5, lw=1,
                        capsize=1.5, color=colors[s % len(colors)], label=f"(J, n) = ({J}, {n})")
        nq = sum(method_group(k) == "Q" for k in methods)
        if 0 < nq < len(methods):
            ax.axvline(nq - 0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks(x)
        ax.set_xticklabels([METHOD_LABELS[k] for k in methods], rotation=45, ha="right", fontsize=7)
        for lab, k in zip(ax.get_xticklabels(), methods):
            lab.set_color(GROUP_COLORS[method_group(k)])
        ax.set_title(METRIC_LABELS.get(mt, mt))
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(f"Performance of the estimators in {design_title(design)}: "
                 + ", ".join(METRIC_LABELS.get(mt, mt) for mt in metrics))
    fig.tight_layout()
    return fig


def heatmap_order(labels: Sequence, reverse_weighting: bool = True) -> list[int]:
    """Positions of ``labels`` in display order: Q-learning as given, then weighting (reversed)."""
    q = [i for i, m in enumerate(labels) if method_group(m) == "Q"]
    w = [i for i, m in enumerate(labels) if method_group(m) == "W"]
    return q + (w[::-1] if reverse_weighting else w)


def congruence_heatmap(matrix, labels: Sequence, title: str, reverse_weighting: bool = True,
                       highlight: float = 0.98, ax=None) -> Figure:
    """Congruence matrix: upper triangle a coloured heatmap, lower triangle the values in percent.

    ``matrix``: (m, m) shares of agreement (0–1) between the estimators in ``labels`` (registry
    names or paper labels). Weighting estimators are listed in reverse order after the Q-learning
    ones (the paper's layout); lower-triangle values of at least ``highlight`` (as displayed,
    rounded to whole percent) are printed in red. The diagonal is left blank.
    """
    M = np.asarray(matrix, dtype=float)
    labels = list(labels)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] != len(labels):
        raise ValueError(f"congruence matrix must be square with one row per label; got shape {M.shape} "
                         f"and {len(labels)} labels")
    order = heatmap_order(labels, reverse_weighting)
    M = M[np.ix_(order, order)]
    names = [method_label(labels[i]) for i in order]
    k = len(names)
    if ax is None:
        fig = Figure(figsize=(0.55 * k + 2.8, 0.55 * k + 1.6))
        ax = fig.subplots()
    else:
        fig = ax.figure
    upper = np.triu(np.ones((k, k), bool), 1)
    shown = np.where(upper, M, np.nan)
    off = M[upper | upper.T]
    lo = np.nanmin(off) if np.isfinite(off).any() else 0.0
    im = ax.imshow(100 * shown, cmap="Reds", vmin=100 * min(lo, 0.99), vmax=100, aspect="equal")
    for i in range(k):  # loops over matrix cells for text labels (k <= 14)
        for j in range(i):
            v = M[i, j]
            txt = "–" if not np.isfinite(v) else f"{100 * v:.0f}"
            red = np.isfinite(v) and round(100 * v) >= round(100 * highlight)
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="red" if red else "black", fontweight="bold" if red else "normal")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=90, fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    for tl in list(ax.get_xticklabels()) + list(ax.get_yticklabels()):
        tl.set_color(GROUP_COLORS[method_group(tl.get_text())])
    ax.set_xticks(np.arange(-0.5, k), minor=True)
    ax.set_yticks(np.arange(-0.5, k), minor=True)
    ax.grid(which="minor", color="white", lw=0.6)
    ax.tick_params(which="minor", length=0)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("Congruence (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["METHOD_LABELS", "METHOD_ORDER", "METRIC_LABELS", "accuracy_boxplots", "congruence_heatmap",
           "design_title", "heatmap_order", "method_group", "method_key", "method_label", "metric_panels",
           "ordered_methods"]
