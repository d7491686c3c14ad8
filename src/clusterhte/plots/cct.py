"""Figures of the Colombia CCT application (Suk & Park 2023, Section 6, Figures 6–9).

- :func:`recommended_shares` (Figure 6): per estimator, stacked bars of the shares of students
  recommended and not recommended for the CCT, the recommended percentage printed at the bottom.
- :func:`congruence` (Figure 7): pairwise agreement of the estimators' recommendations
  (:func:`clusterhte.plots.otr.congruence_heatmap`).
- :func:`recommended_by_income` (Figure 8): per estimator, the recommended students counted by
  household income ≤ 380,000 pesos (``inc_380 = 1``, "low income") and > 380,000 pesos, with the
  low-income share of the recommended group printed at the bottom of each bar.
- :func:`benefit_by_grade` (Figure 9): boxplots of the benefit scores by grade for four
  estimators, the share recommended in each grade printed above each box.
- :func:`treated_share_hist`: histogram of the school-level treated shares (the R script's
  ``hist(trt_prop_sch[, 2])``).

Decisions and scores come either long (columns ``method``, ``row`` and ``decision`` / ``cate`` or
``score``, as the fit stage writes them) or wide (one column per method, one row per student);
``row`` indexes the analysis table, so covariates such as ``grade`` or ``inc_380`` are passed as
arrays in that row order. Every function takes ``synthetic``: when true, "SYNTHETIC DATA" is put in
the title and across the figure, so that results on the stand-in data
(:mod:`clusterhte.simulate.cct_synthetic`) are never mistaken for the trial's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from clusterhte.data.cct import is_number
from clusterhte.evaluate.otr_metrics import congruence_matrix
from clusterhte.plots.otr import GROUP_COLORS, METHOD_LABELS, congruence_heatmap, method_group, method_key

# Order of the estimators in the CCT figures (the R script's ``att_score2`` columns).
CCT_ORDER = ("q-base", "q-fe", "q-ri", "q-rs", "q-dm", "q-dm-ri", "q-dm-rs", "w-base", "w-noaug",
             "ws-noaug", "w-aug", "ws-aug", "w-augid", "ws-augid")
SYNTHETIC_TAG = "SYNTHETIC DATA"


def _title(fig: Figure, text: str, synthetic: bool) -> None:
    if synthetic:
        fig.suptitle(f"{SYNTHETIC_TAG} — {text}", color="firebrick", fontweight="bold")
        fig.text(0.5, 0.5, SYNTHETIC_TAG, fontsize=44, color="grey", alpha=0.13, rotation=25,
                 ha="center", va="center", zorder=0)
    else:
        fig.suptitle(text)


def wide_table(table: pd.DataFrame, value: str | Sequence[str] = ("decision",)) -> pd.DataFrame:
    """One column per method (registry names, CCT order), one row per student (sorted by ``row``).

    ``table`` is long (``method``, ``row`` and the first of ``value`` present) or already wide
    (columns are methods by name or label). Methods whose values are all missing are left out.
    """
    values = [value] if isinstance(value, str) else list(value)
    if "method" in table.columns:
        col = next((v for v in values if v in table.columns), None)
        if col is None or "row" not in table.columns:
            raise ValueError(f"long table needs columns 'method', 'row' and one of {values}; "
                             f"got {list(table.columns)}")
        w = table.pivot(index="row", columns="method", values=col).sort_index()
    else:
        w = table.copy()
    w.columns = [method_key(c) for c in w.columns]
    w = w.dropna(axis=1, how="all")
    if w.isna().any().any():
        bad = list(w.columns[w.isna().any()])
        raise ValueError(f"methods {bad} have values for only some students; pass complete fits")
    return w[[m for m in CCT_ORDER if m in w.columns]]


def _labels(methods) -> list[str]:
    return [METHOD_LABELS[m] for m in methods]


def _color_ticks(ax, methods) -> None:
    for tl, m in zip(ax.get_xticklabels(), methods):
        tl.set_color(GROUP_COLORS[method_group(m)])


def _aligned(x, n: int, what: str) -> np.ndarray:
    a = np.asarray(x.to_numpy() if isinstance(x, (pd.Series, pd.Index)) else x)
    if a.shape[0] != n:
        raise ValueError(f"{what} has {a.shape[0]} values but the decisions have {n} students")
    return a


def recommended_shares(decisions: pd.DataFrame, synthetic: bool = False) -> Figure:
    """Figure 6: percentages recommended / not recommended for the CCT per estimator."""
    w = wide_table(decisions, ("decision",))
    methods = list(w.columns)
    share = (w.to_numpy(dtype=float) > 0).mean(axis=0)
    fig = Figure(figsize=(0.6 * len(methods) + 2.5, 4.6))
    ax = fig.subplots()
    x = np.arange(len(methods))
    ax.bar(x, 100 * share, color=[GROUP_COLORS[method_group(m)] for m in methods], label="Recommended")
    ax.bar(x, 100 * (1 - share), bottom=100 * share, color="#d9d9d9", label="Not recommended")
    for xi, s in zip(x, share):
        ax.text(xi, 2, f"{100 * s:.1f}", ha="center", va="bottom", fontsize=7, color="white", fontweight="bold")
    ax.set_xticks(x)
    ax.set_xticklabels(_labels(methods), rotation=45, ha="right", fontsize=8)
    _color_ticks(ax, methods)
    ax.set_ylim(0, 100)
    ax.set_ylabel("Students (%)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False, fontsize=8)
    _title(fig, "Recommended and not recommended groups for the CCT program", synthetic)
    fig.tight_layout()
    return fig


def congruence(decisions: pd.DataFrame, synthetic: bool = False) -> Figure:
    """Figure 7: congruence of the estimators' CCT recommendations."""
    w = wide_table(decisions, ("decision",))
    M = congruence_matrix((w.to_numpy(dtype=float) > 0).astype(float))
    title = "Congruence rates among the estimators (CCT)"
    fig = congruence_heatmap(M, list(w.columns), (f"{SYNTHETIC_TAG} — " if synthetic else "") + title)
    if synthetic:
        fig.text(0.5, 0.5, SYNTHETIC_TAG, fontsize=40, color="grey", alpha=0.13, rotation=25,
                 ha="center", va="center", zorder=0)
        fig.axes[0].title.set_color("firebrick")
    return fig


def recommended_by_income(decisions: pd.DataFrame, inc_380, synthetic: bool = False) -> Figure:
    """Figure 8: recommended students by income (≤ 380,000 vs > 380,000 pesos) per estimator.

    ``inc_380``: 1 for household income ≤ 380 (thousand pesos), 0 otherwise, one value per
    student in the decisions' row order. The low-income percentage of each estimator's recommended
    group is printed at the bottom of its bar.
    """
    w = wide_table(decisions, ("decision",))
    low = _aligned(inc_380, len(w), "inc_380").astype(float)
    if np.isnan(low).any() or not np.isin(low, (0, 1)).all():
        raise ValueError("inc_380 must be 0/1 without missing values")
    D = w.to_numpy(dtype=float) > 0
    n_low = (D & (low[:, None] == 1)).sum(axis=0)
    n_high = (D & (low[:, None] == 0)).sum(axis=0)
    methods = list(w.columns)
    x = np.arange(len(methods))
    fig = Figure(figsize=(0.6 * len(methods) + 2.5, 4.6))
    ax = fig.subplots()
    ax.bar(x, n_low, color="#8c2d04", label="Low income (≤ 380,000 pesos)")
    ax.bar(x, n_high, bottom=n_low, color="#fdae6b", label="Not-low income (> 380,000 pesos)")
    total = np.maximum(n_low + n_high, 1)
    for xi, a, t in zip(x, n_low, total):
        ax.text(xi, 0.01 * max(total), f"{100 * a / t:.1f}", ha="center", va="bottom", fontsize=7,
                color="white", fontweight="bold")
    ax.set_xticks(x)
    ax.set_xticklabels(_labels(methods), rotation=45, ha="right", fontsize=8)
    _color_ticks(ax, methods)
    ax.set_ylabel("Recommended students (count)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False, fontsize=8)
    _title(fig, "Recommended group by household income", synthetic)
    fig.tight_layout()
    return fig


def benefit_by_grade(scores: pd.DataFrame, grade, methods: Sequence[str] = ("q-dm", "q-dm-rs", "w-noaug", "ws-augid"),
                     synthetic: bool = False) -> Figure:
    """Figure 9: distributions of the benefit scores by grade, one panel per estimator.

    ``scores``: long (``method``, ``row``, ``cate`` or ``score``) or wide; ``grade``: one value per
    student in row order. Above each box: the percentage recommended (score > 0) in that grade.
    Weighting scores estimate Δ(x)/2 (``personalized``'s ±1 coding), Q-learning scores Δ(x).
    """
    w = wide_table(scores, ("cate", "score", "point"))
    keys = [method_key(m) for m in methods]
    absent = [m for m in keys if m not in w.columns]
    if absent:
        raise ValueError(f"benefit_by_grade: no scores for {absent}; available: {list(w.columns)}")
    g = pd.Series(_aligned(grade, len(w), "grade"))
    if g.isna().any():
        raise ValueError("grade has missing values")
    levels = sorted(g.unique(), key=lambda v: (float(v) if is_number(v) else np.inf, str(v)))
    ncol = 2 if len(keys) > 1 else 1
    nrow = int(np.ceil(len(keys) / ncol))
    fig = Figure(figsize=(5.4 * ncol, 3.4 * nrow + 0.6))
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, m in zip(axes, keys):
        s = w[m].to_numpy(dtype=float)
        groups = [s[(g == lv).to_numpy()] for lv in levels]
        bp = ax.boxplot(groups, positions=range(len(levels)), widths=0.6, patch_artist=True,
                        flierprops=dict(markersize=2, alpha=0.5), medianprops=dict(color="black"))
        for p in bp["boxes"]:
            p.set_facecolor(GROUP_COLORS[method_group(m)])
            p.set_alpha(0.8)
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        tr = blended_transform_factory(ax.transData, ax.transAxes)
        for i, v in enumerate(groups):
            ax.text(i, 1.02, f"{100 * np.mean(v > 0):.0f}%" if v.size else "", transform=tr, ha="center",
                    va="bottom", fontsize=8)
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels([_fmt_level(lv) for lv in levels])
        ax.set_xlabel("Grade")
        ax.set_ylabel("Benefit score")
        ax.set_title(METHOD_LABELS[m], pad=18)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    _title(fig, "Benefit scores by grade (% recommended above each box)", synthetic)
    fig.tight_layout()
    return fig


def treated_share_hist(frame: pd.DataFrame, synthetic: bool = False, bins: int = 10) -> Figure:
    """Histogram of the schools' treated shares (``trt``/``treatment`` by ``school_code``/``cluster``)."""
    from clusterhte.data.cct import school_treated_shares

    sh = school_treated_shares(frame)
    overall = sh["n_treated"].sum() / sh["n"].sum()
    fig = Figure(figsize=(5.2, 3.8))
    ax = fig.subplots()
    ax.hist(sh["share"], bins=bins, color="#6baed6", edgecolor="white")
    ax.axvline(overall, color="firebrick", lw=1.2, label=f"overall {overall:.2f}")
    ax.set_xlabel("Share of students treated in the school")
    ax.set_ylabel("Schools")
    ax.legend(frameon=False, fontsize=8,
              title=f"{len(sh)} schools, range {sh['share'].min():.2f}–{sh['share'].max():.2f}",
              title_fontsize=8)
    _title(fig, "School-level treated shares", synthetic)
    fig.tight_layout()
    return fig



def _fmt_level(v) -> str:
    return str(int(float(v))) if is_number(v) and float(v).is_integer() else str(v)


__all__ = ["CCT_ORDER", "SYNTHETIC_TAG", "benefit_by_grade", "congruence", "recommended_by_income",
           "recommended_shares", "treated_share_hist", "wide_table"]
