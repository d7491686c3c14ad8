"""Markdown table of the OTR study's mean accuracies (per design x size x method, with Monte-Carlo
SE) next to the values Suk & Park (2023) state in their text, from the aggregate stage's tables.

    .venv/bin/python benchmarks/otr_reproduction_table.py [results/tables/otr_summary.csv]
        [--congruence results/tables/otr_congruence.parquet]

The paper's values are only those written out in its text (papers/002, Section 5); the rest of
its results are boxplots/heatmaps without printed numbers, so those cells stay empty.
"""

from __future__ import annotations

import argparse

import pandas as pd

from clusterhte import methods

LABEL = {m: methods.get(m).label for m in methods.OTR_METHODS}

# Mean accuracies stated in the text (Design 1, (J, n) = (25, 25), Section 5.2 on Figure 1):
# "Q-rs and Q-dm-rs exhibit a slight loss of accuracy (92.4% to 90.8% or 90.7%)".
PAPER_ACCURACY = {("d1", 25, 25): {"q-fe": 0.924, "q-ri": 0.924, "q-dm": 0.924, "q-dm-ri": 0.924,
                                   "q-rs": 0.908, "q-dm-rs": 0.907}}

# Congruence statements (Figure 2: Design 1 at (25, 150); Figure 4: Design 2 at (25, 150)).
PAPER_CONGRUENCE = [
    ("d1", "Q-learning modifications among themselves (Q-base excluded)", ">= 0.98",
     [("q-fe", "q-ri"), ("q-fe", "q-rs"), ("q-ri", "q-dm-rs"), ("q-rs", "q-dm-rs"), ("q-dm", "q-dm-ri")]),
    ("d1", "Q-base with the other Q-learning methods", "0.83-0.92",
     [("q-base", m) for m in ("q-fe", "q-ri", "q-rs", "q-dm", "q-dm-ri", "q-dm-rs")]),
    ("d1", "W-aug / WS-aug with the Q-learning modifications", "about 0.93-0.94",
     [(w, q) for w in ("w-aug", "ws-aug") for q in ("q-fe", "q-ri", "q-rs")]),
    ("d1", "W-augID / WS-augID with the Q-learning modifications", "up to about 0.99",
     [(w, q) for w in ("w-augid", "ws-augid") for q in ("q-fe", "q-ri", "q-rs")]),
    ("d1", "W-noaug / WS-noaug with augmented W and Q-learning methods", "at most 0.92",
     [(w, o) for w in ("w-noaug", "ws-noaug") for o in ("w-aug", "w-augid", "q-fe", "q-ri")]),
    ("d2", "Q-rs with Q-dm-rs", "0.99", [("q-rs", "q-dm-rs")]),
    ("d2", "Q-rs / Q-dm-rs with the other Q-learning modifications", "about 0.90",
     [(a, b) for a in ("q-rs", "q-dm-rs") for b in ("q-fe", "q-ri", "q-dm", "q-dm-ri")]),
    ("d2", "WS-augID with Q-rs / Q-dm-rs", "0.93", [("ws-augid", "q-rs"), ("ws-augid", "q-dm-rs")]),
    ("d2", "W-augID with Q-rs / Q-dm-rs", "0.90", [("w-augid", "q-rs"), ("w-augid", "q-dm-rs")]),
]


def accuracy_table(summary: pd.DataFrame) -> str:
    acc = summary[summary["metric"] == "accuracy"]
    lines = []
    for d in sorted(acc["design"].unique()):
        a = acc[acc["design"] == d]
        sizes = sorted({(int(J), int(n)) for J, n in zip(a["J"], a["n"])})
        head = "| method | " + " | ".join(f"({J}, {n})" for J, n in sizes) + " |"
        lines += [f"\n**Design {d[1]}** (mean accuracy, Monte-Carlo SE in brackets; paper's value "
                  "after the slash where its text gives one; replicates per cell: "
                  f"{int(a['n_reps'].min())}-{int(a['n_reps'].max())})\n", head,
                  "|" + "---|" * (len(sizes) + 1)]
        for m in methods.OTR_METHODS:
            cells = []
            for J, n in sizes:
                r = a[(a["method"] == m) & (a["J"] == J) & (a["n"] == n)]
                if r.empty:
                    cells.append("")
                    continue
                txt = f"{r['mean'].iloc[0]:.3f} ({r['mcse'].iloc[0]:.3f})"
                paper = PAPER_ACCURACY.get((d, J, n), {}).get(m)
                if paper is not None:
                    txt += f" / **{paper:.3f}**"
                cells.append(txt)
            lines.append(f"| {LABEL[m]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def congruence_table(cong: pd.DataFrame, J: int = 25, n: int = 150) -> str:
    c = cong[(cong["J"] == J) & (cong["n"] == n)]
    lines = [f"\n**Congruence at (J, n) = ({J}, {n})** (mean share of test units with the same "
             "decision; range over the listed pairs)\n",
             "| design | pairs | paper (text) | this run |", "|---|---|---|---|"]
    for d, what, paper, pairs in PAPER_CONGRUENCE:
        vals = []
        for a, b in pairs:
            r = c[(c["design"] == d) & (c["method"] == a) & (c["other"] == b)]
            if not r.empty:
                vals.append(float(r["mean"].iloc[0]))
        ours = (f"{min(vals):.3f}-{max(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}") if vals else ""
        lines.append(f"| {d[1]} | {what} | {paper} | {ours} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summary", nargs="?", default="results/tables/otr_summary.csv")
    ap.add_argument("--congruence", default="results/tables/otr_congruence.parquet")
    a = ap.parse_args()
    print(accuracy_table(pd.read_csv(a.summary)))
    try:
        print(congruence_table(pd.read_parquet(a.congruence)))
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    main()
