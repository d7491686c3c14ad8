"""CRT-CATE simulation design: cells, data-generating process and trial tables (spec §4).

Model (spec ``crt_cate.md`` §2, §4.2–4.3), clusters i = 1..M, individuals j = 1..N_i:

- cluster covariates V1_i ~ N(0, 1), V2_i ~ Bernoulli(0.5), V3_i = standardised cluster size;
- individual covariates X1_ij = 0.5 V1_i + N(0, 1) (ICC of X1 = 0.25 / 1.25 = 0.2),
  X2_ij ~ N(0, 1), X3_ij ~ Bernoulli(0.5), X4_ij ~ Uniform(−1, 1), X5_ij ~ N(0, 1) (noise);
- exact 1:1 allocation: M/2 clusters treated, chosen by a random permutation;
- Y_ij = f0 + A_i·tau + b_i + e_ij, b_i ~ N(0, icc), e_ij ~ N(0, 1 − icc) (total variance 1);

with the mean functions

    f0_lin     = 1 + 0.5 X1 − 0.5 X2 + 0.5 X3 + 0.5 V1 + 0.5 V2
    f0_nonlin  = 1 + sin(π X1 X4) + 0.5 X2² + 0.5 X3·X4 + 0.5 V1 + 0.5 V2 + 0.25 V1·X1
    tau_hom    = 0.5
    tau_lin    = 0.5 + 0.5 X1 + 0.5 V2 − 0.25 X3
    tau_nonlin = 0.5 + 0.5·1{X2 > 0} + 0.5 X3·V2 + 0.5 sin(π X4) + 0.25 V1²

so that E[tau_hom] = 0.5, E[tau_lin] = 0.625 and E[tau_nonlin] = 1.125.

The paper (arXiv:2604.13406) does not publish its simulation code; this design is the project's
own (spec §4, marked PROPOSED there). Choices made here where the spec leaves room:

- **The 36-cell grid.** The spec lists M ∈ {30, 60}, ICC ∈ {0.05, 0.20}, f0 ∈ {lin, nonlin},
  tau ∈ {hom, lin, nonlin} with cluster size Uniform{10..30}, and fixed size 20 "as a
  sensitivity", and counts 2 × 2 × 3 × 3 = 36 cells. :func:`grid` reads this as
  M × ICC × scenario × tau with three scenarios (lin f0, variable size), (nonlin f0, variable
  size), (lin f0, fixed size 20): the 24 main cells plus 12 fixed-size sensitivity cells.
- **V3** is standardised with the *theoretical* mean and SD of the cell's size distribution
  (Uniform{a..b}: mean (a+b)/2, variance ((b−a+1)² − 1)/12), so the same map applies to the
  training and the test clusters; with a fixed size V3 is 0 everywhere and
  :func:`trial_from_replicate` leaves it out (a constant covariate is not allowed in a trial).
  V3 enters neither f0 nor tau; it lets methods see cluster size.
- **Test set**: ``n_test_clusters`` new clusters of ``test_cluster_size`` individuals (default
  50 × 20, spec §4.3) drawn from the same covariate distribution, with their own random
  intercepts, a valid 1:1 treatment column (irrelevant for the CATE) and the **simulated
  outcome** (not NaN), so every truth column is available on both splits.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from clusterhte import seeds
from clusterhte.data.trial import TrialData

INDIVIDUAL_COVARIATES = ("X1", "X2", "X3", "X4", "X5")
CLUSTER_COVARIATES = ("V1", "V2", "V3")
TRUTH_COLUMNS = ("f0", "tau", "b", "y0", "y1")
COLUMNS = (("split", "row", "cluster", "treatment", "outcome") + INDIVIDUAL_COVARIATES
           + CLUSTER_COVARIATES + TRUTH_COLUMNS)

F0_LEVELS = ("lin", "nonlin")
TAU_LEVELS = ("hom", "lin", "nonlin")
MAIN_LEVELS = {"M": (30, 60), "size": ("u10-30",), "icc": (0.05, 0.20), "f0": F0_LEVELS,
               "tau": TAU_LEVELS}
SENSITIVITY_SIZE = 20

_UNIFORM = re.compile(r"^u(\d+)-(\d+)$")
_NAME = re.compile(r"^M(?P<M>\d+)_s(?P<size>u\d+-\d+|\d+)_icc(?P<icc>[0-9.eE+-]+)"
                   r"_f0(?P<f0>[a-z]+)_tau(?P<tau>[a-z]+)$")


def parse_size(size) -> int | tuple[int, int]:
    """A cluster-size spec as an int (fixed) or ``(lo, hi)`` (discrete uniform, both inclusive).

    Accepted: an int ≥ 1, a string of digits (``"20"``), or ``"u<lo>-<hi>"`` (``"u10-30"``).
    """
    if isinstance(size, (bool, np.bool_)):
        raise ValueError(f"cluster size must be an int or 'u<lo>-<hi>', got {size!r}")
    if isinstance(size, (int, np.integer)):
        if size < 1:
            raise ValueError(f"cluster size must be at least 1, got {size}")
        return int(size)
    if isinstance(size, float) and size.is_integer() and size >= 1:
        return int(size)
    s = str(size).strip()
    if s.isdigit() and int(s) >= 1:
        return int(s)
    m = _UNIFORM.match(s)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if 1 <= lo <= hi:
            return (lo, hi)
    raise ValueError(f"cluster size must be an int ≥ 1 or 'u<lo>-<hi>' with 1 ≤ lo ≤ hi "
                     f"(e.g. 'u10-30'), got {size!r}")


def size_moments(size) -> tuple[float, float]:
    """Mean and SD of the cluster-size distribution (SD 0 for a fixed size)."""
    p = parse_size(size)
    if isinstance(p, int):
        return float(p), 0.0
    lo, hi = p
    k = hi - lo + 1
    return (lo + hi) / 2.0, float(np.sqrt((k * k - 1) / 12.0))


def _draw_sizes(size, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    p = parse_size(size)
    if isinstance(p, int):
        return np.full(n_clusters, p, dtype=np.int64)
    return rng.integers(p[0], p[1] + 1, size=n_clusters).astype(np.int64)


@dataclass(frozen=True)
class CrtCell:
    """One design cell of the CRT-CATE simulation.

    M : number of (training) clusters, even (exact 1:1 allocation).
    size : cluster size, ``"u10-30"`` (discrete Uniform{10..30}) or an int (fixed).
    icc : intra-cluster correlation s_b² / (s_b² + s_e²) with s_b² + s_e² = 1, in [0, 1).
    f0 : prognostic function, ``"lin"`` or ``"nonlin"``.
    tau : CATE function, ``"hom"``, ``"lin"`` or ``"nonlin"``.
    """

    M: int
    size: int | str = "u10-30"
    icc: float = 0.05
    f0: str = "lin"
    tau: str = "hom"

    def __post_init__(self):
        if isinstance(self.M, bool) or not float(self.M).is_integer() or int(self.M) < 4:
            raise ValueError(f"CrtCell: M (number of clusters) must be an integer ≥ 4, got {self.M!r}")
        object.__setattr__(self, "M", int(self.M))
        p = parse_size(self.size)
        object.__setattr__(self, "size", p if isinstance(p, int) else f"u{p[0]}-{p[1]}")
        icc = float(self.icc)
        if not 0.0 <= icc < 1.0:
            raise ValueError(f"CrtCell: icc must be in [0, 1), got {self.icc!r}")
        object.__setattr__(self, "icc", icc)
        if self.f0 not in F0_LEVELS:
            raise ValueError(f"CrtCell: f0 must be one of {F0_LEVELS}, got {self.f0!r}")
        if self.tau not in TAU_LEVELS:
            raise ValueError(f"CrtCell: tau must be one of {TAU_LEVELS}, got {self.tau!r}")

    @property
    def name(self) -> str:
        """Stable, filename-safe name, e.g. ``M30_su10-30_icc0.05_f0lin_taulin``."""
        return f"M{self.M}_s{self.size}_icc{self.icc:g}_f0{self.f0}_tau{self.tau}"

    @classmethod
    def from_name(cls, name: str) -> "CrtCell":
        """Parse a name made by :attr:`name` back into a cell."""
        m = _NAME.match(str(name))
        if not m:
            raise ValueError(f"bad CRT cell name {name!r}; expected like 'M30_su10-30_icc0.05_f0lin_taulin' "
                             f"(size 'u<lo>-<hi>' or an int, f0 in {F0_LEVELS}, tau in {TAU_LEVELS})")
        try:
            icc = float(m["icc"])
        except ValueError:
            raise ValueError(f"bad CRT cell name {name!r}: icc {m['icc']!r} is not a number") from None
        try:
            return cls(M=int(m["M"]), size=m["size"], icc=icc, f0=m["f0"], tau=m["tau"])
        except ValueError as e:
            raise ValueError(f"bad CRT cell name {name!r}: {e}") from None

    def __str__(self) -> str:
        return self.name


def grid(M: Sequence[int] | None = None, size: Sequence | None = None, icc: Sequence[float] | None = None,
         f0: Sequence[str] | None = None, tau: Sequence[str] | None = None,
         sensitivity: bool = True) -> list[CrtCell]:
    """Design cells: the product of the factor lists (a factor left as None takes its main levels).

    Main levels: M (30, 60), size ("u10-30",), icc (0.05, 0.20), f0 (lin, nonlin),
    tau (hom, lin, nonlin). When ``size`` is None and ``sensitivity`` is true, the fixed-size-20
    sensitivity cells are added for the linear-f0 cells of the product, so ``grid()`` is the
    36-cell design of spec §4.1 (24 main + 12 sensitivity cells).
    """
    levels = {"M": M, "size": size, "icc": icc, "f0": f0, "tau": tau}
    for k, v in levels.items():
        if v is None:
            levels[k] = MAIN_LEVELS[k]
        elif isinstance(v, (str, int, float)):
            levels[k] = (v,)
    cells = [CrtCell(M=a, size=s, icc=i, f0=f, tau=t)
             for a, s, i, f, t in itertools.product(levels["M"], levels["size"], levels["icc"],
                                                    levels["f0"], levels["tau"])]
    if size is None and sensitivity:
        cells += [CrtCell(M=c.M, size=SENSITIVITY_SIZE, icc=c.icc, f0=c.f0, tau=c.tau)
                  for c in cells if c.f0 == "lin"]
    names = [c.name for c in cells]
    return [c for k, c in enumerate(cells) if c.name not in names[:k]]


# ---------------------------------------------------------------------------- mean functions
def f0_value(kind: str, X: dict[str, np.ndarray]) -> np.ndarray:
    """Prognostic function ``kind`` ("lin"/"nonlin") at covariates ``X`` (dict of arrays)."""
    if kind == "lin":
        return 1 + 0.5 * X["X1"] - 0.5 * X["X2"] + 0.5 * X["X3"] + 0.5 * X["V1"] + 0.5 * X["V2"]
    if kind == "nonlin":
        return (1 + np.sin(np.pi * X["X1"] * X["X4"]) + 0.5 * X["X2"] ** 2 + 0.5 * X["X3"] * X["X4"]
                + 0.5 * X["V1"] + 0.5 * X["V2"] + 0.25 * X["V1"] * X["X1"])
    raise ValueError(f"f0 must be one of {F0_LEVELS}, got {kind!r}")


def tau_value(kind: str, X: dict[str, np.ndarray]) -> np.ndarray:
    """CATE function ``kind`` ("hom"/"lin"/"nonlin") at covariates ``X`` (dict of arrays)."""
    shape = np.shape(X["X1"])
    if kind == "hom":
        return np.full(shape, 0.5)
    if kind == "lin":
        return 0.5 + 0.5 * X["X1"] + 0.5 * X["V2"] - 0.25 * X["X3"]
    if kind == "nonlin":
        return (0.5 + 0.5 * (X["X2"] > 0) + 0.5 * X["X3"] * X["V2"] + 0.5 * np.sin(np.pi * X["X4"])
                + 0.25 * X["V1"] ** 2)
    raise ValueError(f"tau must be one of {TAU_LEVELS}, got {kind!r}")


TAU_MEAN = {"hom": 0.5, "lin": 0.625, "nonlin": 1.125}
"""E[tau] under the covariate distribution (closed form)."""


# ---------------------------------------------------------------------------- simulation
def _clusters(cell: CrtCell, sizes: np.ndarray, rng: np.random.Generator, first_label: int,
              mean_n: float, sd_n: float) -> dict[str, np.ndarray]:
    """Individual rows of one set of clusters with sizes ``sizes`` (fixed draw order)."""
    J = sizes.size
    n = int(sizes.sum())
    cl = np.repeat(np.arange(J), sizes)
    V1 = rng.normal(size=J)
    V2 = rng.binomial(1, 0.5, J).astype(float)
    V3 = (sizes - mean_n) / sd_n if sd_n > 0 else np.zeros(J)
    A = np.zeros(J, dtype=np.int64)
    A[rng.permutation(J)[: J // 2]] = 1
    b = rng.normal(0.0, np.sqrt(cell.icc), J)
    X = {"V1": V1[cl], "V2": V2[cl], "V3": V3[cl].astype(float)}
    X["X1"] = 0.5 * X["V1"] + rng.normal(size=n)
    X["X2"] = rng.normal(size=n)
    X["X3"] = rng.binomial(1, 0.5, n).astype(float)
    X["X4"] = rng.uniform(-1.0, 1.0, n)
    X["X5"] = rng.normal(size=n)
    e = rng.normal(0.0, np.sqrt(1.0 - cell.icc), n)
    f0 = f0_value(cell.f0, X)
    tau = tau_value(cell.tau, X)
    y0 = f0 + b[cl] + e
    y1 = y0 + tau
    a = A[cl]
    return {"row": np.arange(n, dtype=np.int64), "cluster": cl.astype(np.int64) + first_label,
            "treatment": a, "outcome": np.where(a == 1, y1, y0),
            **{k: X[k] for k in INDIVIDUAL_COVARIATES + CLUSTER_COVARIATES},
            "f0": f0, "tau": tau, "b": b[cl], "y0": y0, "y1": y1}


def simulate_replicate(cell: CrtCell | str, rng: np.random.Generator, n_test_clusters: int = 50,
                       test_cluster_size: int | str | None = 20) -> pd.DataFrame:
    """One replicate: the training trial (``split="train"``) and new test clusters (``"test"``).

    Columns :data:`COLUMNS`: ``split``, ``row`` (0-based position within the split), ``cluster``
    (training clusters 0..M−1, test clusters M..M+n_test_clusters−1), ``treatment``, ``outcome``
    (simulated on both splits), X1..X5, V1..V3 and the truth f0, tau, b, y0, y1.
    ``test_cluster_size``: an int, ``"u<lo>-<hi>"``, or None for the cell's own size distribution.
    ``n_test_clusters = 0`` gives a training set only.
    """
    cell = CrtCell.from_name(cell) if isinstance(cell, str) else cell
    if cell.M % 2:
        raise ValueError(f"cell {cell.name}: M = {cell.M} is odd; exact 1:1 allocation needs an even "
                         "number of clusters")
    if int(n_test_clusters) < 0:
        raise ValueError(f"n_test_clusters must be ≥ 0, got {n_test_clusters}")
    mean_n, sd_n = size_moments(cell.size)
    train = _clusters(cell, _draw_sizes(cell.size, cell.M, rng), rng, 0, mean_n, sd_n)
    parts = [pd.DataFrame({"split": "train", **train})]
    if n_test_clusters:
        tsize = cell.size if test_cluster_size is None else test_cluster_size
        test = _clusters(cell, _draw_sizes(tsize, int(n_test_clusters), rng), rng, cell.M, mean_n, sd_n)
        parts.append(pd.DataFrame({"split": "test", **test}))
    return pd.concat(parts, ignore_index=True)[list(COLUMNS)]


def simulate_chunk(cell: CrtCell | str, root_seed: int, reps: Iterable[int], study: str = "crt",
                   n_test_clusters: int = 50, test_cluster_size: int | str | None = 20) -> pd.DataFrame:
    """Replicates ``reps`` of ``cell`` stacked with a leading ``rep`` column.

    Replicate r uses the stream ``seeds.rng(root_seed, study, cell.name, r)``, so it is the same
    whichever chunk it falls in.
    """
    cell = CrtCell.from_name(cell) if isinstance(cell, str) else cell
    reps = [int(r) for r in reps]
    if not reps:
        raise ValueError(f"cell {cell.name}: no replicates requested")
    parts = []
    for r in reps:
        df = simulate_replicate(cell, seeds.rng(root_seed, study, cell.name, r),
                                n_test_clusters=n_test_clusters, test_cluster_size=test_cluster_size)
        df.insert(0, "rep", np.int64(r))
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def trial_from_replicate(df_rep: pd.DataFrame, split: str, include_v3: bool | None = None,
                         name: str | None = None) -> TrialData:
    """The :class:`TrialData` of one split of one replicate (rows in ``row`` order).

    Roles: individual covariates X1..X5, cluster covariates V1, V2 (and V3), design ``crt``.
    ``include_v3=None`` includes V3 when it varies over the rows of ``df_rep`` (pass the whole
    replicate so training and test tables agree); fixed-size cells have V3 ≡ 0 and drop it.
    The test split is validated without requiring outcomes or both arms.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if "rep" in df_rep.columns and df_rep["rep"].nunique() > 1:
        raise ValueError(f"trial_from_replicate: the table holds replicates "
                         f"{sorted(df_rep['rep'].unique())[:5]}; pass one replicate")
    need = ["split", "cluster", "treatment", "outcome", *INDIVIDUAL_COVARIATES, "V1", "V2"]
    missing = [c for c in need if c not in df_rep.columns]
    if missing:
        raise ValueError(f"trial_from_replicate: missing column(s) {missing}")
    if include_v3 is None:
        include_v3 = "V3" in df_rep.columns and np.ptp(df_rep["V3"].to_numpy(dtype=float)) > 0
    ccov = ("V1", "V2", "V3") if include_v3 else ("V1", "V2")
    g = df_rep[df_rep["split"] == split]
    if g.empty:
        raise ValueError(f"trial_from_replicate: no rows with split == {split!r}")
    if "row" in g.columns:
        g = g.sort_values("row", kind="stable")
    cols = ["cluster", "treatment", "outcome", *INDIVIDUAL_COVARIATES, *ccov]
    frame = g[cols].reset_index(drop=True)
    rep = f" rep {int(df_rep['rep'].iloc[0])}" if "rep" in df_rep.columns else ""
    td = TrialData(frame, "crt", INDIVIDUAL_COVARIATES, ccov, (), name=name or f"crt sim{rep} {split}")
    if split == "test":
        return td.validate(require_outcome=False, require_both_arms=False)
    return td.validate()
