"""Multisite-OTR simulation Designs 1–4 (Suk & Park 2023, Section 5; R: ``multilevel_DGP``).

Model (spec ``otr_multisite.md`` §3.1), clusters j = 1..J with n_j units each:

- X1..X5 iid N(0, 1), drawn independently for the training and the test set;
- cluster terms shared by training and test: R_j ~ N(0, R.sd²) (drives treatment only) and an
  unmeasured cluster covariate U1_j ~ N(0, 1);
- treatment: logit p_j = log(overall / (1 − overall)) + 0.8 R_j, trt ~ Bernoulli(p_j);
- true benefit Δ = 0.2 + 0.5 X3 − 0.2 X4 − 0.2 X5 + β1 U1_j;
- outcome Y = 0.7 + X1 + X2 − 2 X3 + X4 + 0.5 X5 + c·exp(−0.6 X1 X2 + 0.3 X1) + β2 U1_j
  + Δ·trt + e, e ~ N(0, 1), β2 = 2.5, c = ``nonlinear_effect``.

Designs (§3.2): D1 β1 = 0, R.sd = 0.9; D2 β1 = 0.2 (unmeasured cluster-level moderator);
D3 nonlinear prognostic term (c = 1); D4 R.sd = 1.5 (higher treatment ICC).

The training set is redrawn as a whole until every training cluster has a treated share strictly
between 0 and 1 (§3.3); the test set is new individuals in the *same* clusters (same R_j, U1_j)
and is not checked. Differences from the R original: it is seeded (the R code never calls
``set.seed``), the test set draws its own treatment from p_j directly (the R code reuses the
training-length ``trt.prob``, which is only right because n_test = n_train), and
``n_test`` may differ from ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from clusterhte import seeds
from clusterhte.data.trial import TrialData

COVARIATES = ("X1", "X2", "X3", "X4", "X5")
MODERATORS = ("X3", "X4", "X5")


@dataclass(frozen=True)
class Design:
    name: str
    beta1: float = 0.0
    r_sd: float = 0.9
    nonlinear_effect: float = 0.0
    overall: float = 0.5
    beta2: float = 2.5
    description: str = ""


DESIGNS = {
    "d1": Design("d1", description="no cluster-level moderator"),
    "d2": Design("d2", beta1=0.2, description="unmeasured cluster-level moderator (U1 x trt)"),
    "d3": Design("d3", nonlinear_effect=1.0, description="nonlinear prognostic term"),
    "d4": Design("d4", r_sd=1.5, description="higher treatment ICC (R.sd = 1.5)"),
}
SIZES = ((25, 25), (25, 150), (150, 25), (150, 150))


def cell_name(design: str, J: int, n: int) -> str:
    """Stable, filename-safe cell name, e.g. ``d1_J25_n150``."""
    return f"{design}_J{int(J)}_n{int(n)}"


def parse_cell(name: str) -> tuple[str, int, int]:
    try:
        d, j, n = name.split("_")
        assert d in DESIGNS and j[0] == "J" and n[0] == "n"
        return d, int(j[1:]), int(n[1:])
    except (ValueError, AssertionError):
        raise ValueError(f"bad OTR cell name {name!r}; expected like 'd1_J25_n150' with design in "
                         f"{sorted(DESIGNS)}") from None


def get_design(name: str) -> Design:
    if name not in DESIGNS:
        raise ValueError(f"unknown OTR design {name!r}; known: {sorted(DESIGNS)}")
    return DESIGNS[name]


def _units(design: Design, J: int, n: int, R, U1, rng) -> dict[str, np.ndarray]:
    cl = np.repeat(np.arange(J), n)
    X = rng.standard_normal((J * n, 5))
    p = 1.0 / (1.0 + np.exp(-(np.log(design.overall / (1 - design.overall)) + 0.8 * R)))
    trt = (rng.random(J * n) < p[cl]).astype(float)
    x1, x2, x3, x4, x5 = X.T
    delta = 0.2 + 0.5 * x3 - 0.2 * x4 - 0.2 * x5 + design.beta1 * U1[cl]
    xbeta = (0.7 + x1 + x2 - 2 * x3 + x4 + 0.5 * x5
             + design.nonlinear_effect * np.exp(-0.6 * x1 * x2 + 0.3 * x1) + design.beta2 * U1[cl])
    e = rng.standard_normal(J * n)
    y0 = xbeta + e
    y1 = y0 + delta
    out = {"cluster": cl, "treatment": trt, "outcome": np.where(trt == 1, y1, y0),
           "y0": y0, "y1": y1, "delta": delta, "trt_prob": p[cl], "R": R[cl], "U1": U1[cl]}
    out.update({f"X{k + 1}": X[:, k] for k in range(5)})
    return out


def _replicate_arrays(d: Design, J: int, n: int, rng: np.random.Generator, n_test: int,
                      max_redraws: int) -> dict[str, np.ndarray]:
    for redraws in range(max_redraws):
        R = rng.normal(0.0, d.r_sd, J)
        U1 = rng.standard_normal(J)
        tr = _units(d, J, n, R, U1, rng)
        share = np.bincount(tr["cluster"], weights=tr["treatment"], minlength=J) / n
        if np.all((share > 0) & (share < 1)):
            break
    else:  # pragma: no cover - practically unreachable for the paper's designs
        raise RuntimeError(f"no training draw with both arms in every cluster after {max_redraws} tries")
    te = _units(d, J, n_test, R, U1, rng)
    ntr, nte = J * n, J * n_test
    out = {"split": np.repeat(np.array(["train", "test"], dtype=object), [ntr, nte]),
           "row": np.r_[np.arange(ntr), np.arange(nte)]}
    out.update({k: np.concatenate([tr[k], te[k]]) for k in tr})
    out["redraws"] = np.full(ntr + nte, redraws, dtype=np.int64)
    return out


def simulate_replicate(design: str | Design, J: int, n: int, rng: np.random.Generator,
                       n_test: int | None = None, max_redraws: int = 10_000) -> pd.DataFrame:
    """One replicate: training rows (``split='train'``) and test rows (``split='test'``).

    Columns: split, row (position within split), cluster, treatment, outcome, X1..X5, delta,
    y0, y1, trt_prob, R, U1, redraws (how many training draws were rejected).
    """
    d = get_design(design) if isinstance(design, str) else design
    if J < 2 or n < 2:
        raise ValueError(f"need J >= 2 clusters and n >= 2 per cluster, got J={J}, n={n}")
    n_test = n if n_test is None else n_test
    return _frame(_replicate_arrays(d, J, n, rng, n_test, max_redraws))


def _frame(cols: dict[str, np.ndarray]) -> pd.DataFrame:
    f = pd.DataFrame(cols, copy=False)
    f["split"] = f["split"].astype(str)
    return f


def _chunk_parts(design: str, J: int, n: int, reps, root_seed: int, study: str) -> list[dict]:
    d = get_design(design)
    if J < 2 or n < 2:
        raise ValueError(f"need J >= 2 clusters and n >= 2 per cluster, got J={J}, n={n}")
    cell = cell_name(design, J, n)
    parts = []
    for r in reps:
        a = _replicate_arrays(d, J, n, seeds.rng(root_seed, study, cell, "simulate", int(r)), n, 10_000)
        parts.append({"rep": np.full(a["row"].size, int(r), dtype=np.int64), **a})
    if not parts:
        raise ValueError("simulate_chunk: no replicates requested")
    return parts


def simulate_chunk(design: str, J: int, n: int, reps, root_seed: int, study: str = "otr") -> pd.DataFrame:
    """Replicates ``reps`` of one cell; replicate r always gets the stream (study, cell, r).

    The replicates' columns are concatenated as arrays and framed once (no per-replicate frames).
    """
    parts = _chunk_parts(design, J, n, reps, root_seed, study)
    return _frame({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def simulate_chunk_table(design: str, J: int, n: int, reps, root_seed: int, study: str = "otr"):
    """:func:`simulate_chunk` as a pyarrow Table (what the simulate jobs write): the same columns,
    values and types (``split`` a large string), built from the arrays without a pandas frame
    (the string column alone cost a third of a (150, 150) chunk's simulation)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = _chunk_parts(design, J, n, reps, root_seed, study)
    cols = {}
    for k in parts[0]:
        if k == "split":
            code = np.concatenate([(p["split"] == "test").astype(np.int8) for p in parts])
            cols[k] = pc.take(pa.array(["train", "test"], type=pa.large_string()), pa.array(code))
        else:
            cols[k] = np.concatenate([p[k] for p in parts])
    return pa.table(cols)


def trial_from_replicate(df: pd.DataFrame, split: str) -> TrialData:
    """The TrialData of one replicate's ``split`` (covariates X1..X5, moderators X3..X5)."""
    f = df[df["split"] == split].reset_index(drop=True)
    td = TrialData(f, "multisite", COVARIATES, (), MODERATORS, name=f"otr {split}")
    return td.validate(require_both_arms=(split == "train"))
