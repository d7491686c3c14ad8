"""The canonical analysis table of a clustered randomized trial (`TrialData`) and its validation.

A trial table has the columns ``cluster``, ``treatment`` (0/1), ``outcome`` and then covariates.
The *roles* of the covariates (individual-level, cluster-level, moderators) and the design
(``crt``: treatment assigned by cluster; ``multisite``: individuals randomized within sites) are
stored next to the table (and in the Parquet key-value metadata), never guessed from names.

Every check raises one :class:`TrialDataError` that names the source, the column and the rows at
fault, so that a user can go straight to the problem in their file.

:func:`propensity` is the design's known probability of treatment per row, shared by the methods
that need it (the causal forest's ``W.hat``) and the validation's doubly robust scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

DESIGNS = ("crt", "multisite")
CORE_COLUMNS = ("cluster", "treatment", "outcome")
METADATA_KEY = "clusterhte.trial"


class TrialDataError(ValueError):
    """A trial table does not meet the contract; the message names file, column and rows."""


def _rows(mask_or_index, limit: int = 8) -> str:
    """Human-readable list of (0-based) row numbers, truncated after ``limit``."""
    idx = np.flatnonzero(mask_or_index) if np.asarray(mask_or_index).dtype == bool else np.asarray(mask_or_index)
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"rows {shown}{more} (0-based)"


@dataclass(frozen=True)
class TrialData:
    """A validated clustered-trial table with covariate roles.

    Parameters
    ----------
    frame : DataFrame with columns ``cluster``, ``treatment``, ``outcome`` and every covariate.
    design : ``"crt"`` (cluster-randomized) or ``"multisite"`` (randomized within clusters).
    individual_covariates, cluster_covariates : names of the covariate columns by level.
    moderators : covariates that may interact with treatment (used by the OTR estimators).
    name : where the table came from (file path or dataset name), used in error messages.
    """

    frame: pd.DataFrame
    design: str
    individual_covariates: tuple[str, ...] = ()
    cluster_covariates: tuple[str, ...] = ()
    moderators: tuple[str, ...] = ()
    name: str = "trial"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for attr in ("individual_covariates", "cluster_covariates", "moderators"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))

    # ----------------------------------------------------------------- accessors
    @property
    def covariates(self) -> tuple[str, ...]:
        return self.individual_covariates + self.cluster_covariates

    @property
    def n(self) -> int:
        return len(self.frame)

    # A table built from arrays (clusterhte.stages.otr: one row slice of a simulated chunk per
    # replicate) can carry its columns as numpy arrays (:meth:`with_column_arrays`); the accessors
    # below read them instead of building a pandas Series per column (~0.1 ms each, several per
    # fit). They are bound to this frame object: ``replace(...)``, :meth:`with_treatment` and
    # :meth:`subset` make tables without them. A TrialData's frame is never modified in place.
    def with_column_arrays(self, arrays: dict[str, np.ndarray]) -> "TrialData":
        """Attach the frame's columns as arrays (the same values as ``frame[c].to_numpy()``);
        returns self."""
        for c, a in arrays.items():
            if len(a) != len(self.frame) or c not in self.frame.columns:
                raise ValueError(f"column array '{c}' does not match the frame of {self.name}")
        object.__setattr__(self, "_column_arrays", (self.frame, dict(arrays)))
        return self

    def _column(self, name: str, dtype=None) -> np.ndarray:
        cached = self.__dict__.get("_column_arrays")
        if cached is not None and cached[0] is self.frame and name in cached[1]:
            a = cached[1][name]
            return a if dtype is None else a.astype(dtype, copy=False)
        return self.frame[name].to_numpy() if dtype is None else self.frame[name].to_numpy(dtype=dtype)

    @property
    def cluster(self) -> np.ndarray:
        return self._column("cluster")

    def cluster_factors(self) -> tuple[np.ndarray, pd.Index]:
        """``pd.factorize(frame["cluster"], sort=True)``: codes 0..J-1 and the sorted labels;
        integer labels in a compact range by one pass (no hashing), the same codes and labels."""
        v = self._column("cluster")
        out = None
        if v.dtype.kind in "iu" and v.size:
            lo, hi = int(v.min()), int(v.max())
            if hi - lo <= 4 * v.size + 1024:
                off = (v - lo).astype(np.intp, copy=False)
                present = np.zeros(hi - lo + 1, dtype=bool)
                present[off] = True
                rank = np.cumsum(present, dtype=np.intp) - 1
                out = (rank[off], pd.Index((np.flatnonzero(present) + lo).astype(v.dtype)))
        return pd.factorize(self.frame["cluster"], sort=True) if out is None else out

    @property
    def cluster_codes(self) -> np.ndarray:
        """Integer codes 0..J-1 of the clusters, in order of first appearance sorted by label."""
        return self.cluster_factors()[0]

    @property
    def treatment(self) -> np.ndarray:
        return self._column("treatment", float)

    @property
    def outcome(self) -> np.ndarray:
        return self._column("outcome", float)

    def X(self, columns: Sequence[str] | None = None) -> np.ndarray:
        """Covariate matrix (float, C-contiguous, writeable) for ``columns`` (default: all)."""
        cols = list(self.covariates if columns is None else columns)
        if not cols:
            return np.empty((self.n, 0))
        # Column by column into one (k, n) block, returned transposed: the same values and the
        # same (Fortran) layout as ``frame[cols].to_numpy(dtype=float, copy=True)``, without the
        # label index pandas builds for a multi-column selection (~0.8 ms a call, 5x this; the
        # estimators call X() several times per fit).
        out = np.empty((len(cols), self.n))
        for j, c in enumerate(cols):
            out[j] = self._column(c, float)
        return out.T

    def with_treatment(self, value: int | np.ndarray) -> "TrialData":
        """Copy with the treatment column set to ``value`` (for counterfactual predictions)."""
        f = self.frame.copy()
        f["treatment"] = np.broadcast_to(np.asarray(value, dtype=float), (self.n,)).copy()
        return replace(self, frame=f)

    def subset(self, rows) -> "TrialData":
        """Rows selected by a boolean mask or positional index, index reset."""
        f = self.frame.iloc[np.asarray(rows)] if np.asarray(rows).dtype != bool else self.frame.loc[np.asarray(rows)]
        return replace(self, frame=f.reset_index(drop=True))

    # ----------------------------------------------------------------- metadata
    def roles(self) -> dict:
        return {
            "design": self.design,
            "individual_covariates": list(self.individual_covariates),
            "cluster_covariates": list(self.cluster_covariates),
            "moderators": list(self.moderators),
            "name": self.name,
        }

    def metadata(self) -> dict[str, str]:
        """Key-value metadata to store in a Parquet file next to the table."""
        return {METADATA_KEY: json.dumps(self.roles(), sort_keys=True)}

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, metadata: dict[str, str], name: str | None = None,
                   **validate_kw) -> "TrialData":
        """Build from a frame and the key-value metadata written by :meth:`metadata`."""
        if METADATA_KEY not in metadata:
            raise TrialDataError(
                f"{name or 'table'}: no '{METADATA_KEY}' metadata; the covariate roles are unknown. "
                "Write the table with clusterhte.io.write_trial or pass the roles explicitly.")
        roles = json.loads(metadata[METADATA_KEY])
        if name is not None:
            roles["name"] = name
        td = cls(frame=frame, **roles)
        return td.validate(**validate_kw)

    # ----------------------------------------------------------------- validation
    def validate(self, require_outcome: bool = True, require_both_arms: bool = True) -> "TrialData":
        """Check the contract; return ``self`` or raise :class:`TrialDataError`.

        ``require_outcome=False`` is for test sets that carry only truth (new clusters).
        ``require_both_arms=False`` skips the per-design arm checks (prediction sets).
        """
        src = self.name
        f = self.frame
        if not isinstance(f, pd.DataFrame):
            raise TrialDataError(f"{src}: expected a pandas DataFrame, got {type(f).__name__}")
        if self.design not in DESIGNS:
            raise TrialDataError(f"{src}: design must be one of {DESIGNS}, got {self.design!r}")
        if len(f) == 0:
            raise TrialDataError(f"{src}: the table is empty (no rows)")
        needed = list(CORE_COLUMNS) + list(self.covariates)
        missing = [c for c in needed if c not in f.columns]
        if missing:
            raise TrialDataError(f"{src}: missing column(s) {missing}; present: {list(f.columns)}")
        dup = [c for c in self.covariates if list(self.covariates).count(c) > 1]
        if dup:
            raise TrialDataError(f"{src}: covariate(s) listed twice: {sorted(set(dup))}")
        bad_mod = [m for m in self.moderators if m not in self.covariates]
        if bad_mod:
            raise TrialDataError(
                f"{src}: moderator(s) {bad_mod} are not among the covariates {list(self.covariates)}")
        # cluster
        cl = f["cluster"]
        if cl.isna().any():
            raise TrialDataError(f"{src}: column 'cluster' has missing values at {_rows(cl.isna().to_numpy())}")
        # treatment
        tr = f["treatment"]
        trn = pd.to_numeric(tr, errors="coerce")
        bad = trn.isna().to_numpy() | ~np.isin(trn.to_numpy(dtype=float, na_value=np.nan), [0.0, 1.0])
        if bad.any():
            vals = sorted({repr(v) for v in tr[bad].unique()[:5]})
            raise TrialDataError(
                f"{src}: column 'treatment' must be 0/1; found {', '.join(vals)} at {_rows(bad)}")
        # outcome
        if require_outcome:
            y = f["outcome"]
            if pd.api.types.is_bool_dtype(y) or (y.dtype == object and y.map(type).eq(bool).any()):
                isb = y.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy()
                raise TrialDataError(
                    f"{src}: column 'outcome' is stored as true/false at {_rows(isb)}; "
                    "code a binary outcome as the numbers 0 and 1")
            if not pd.api.types.is_numeric_dtype(y):
                yn = pd.to_numeric(y, errors="coerce")
                badv = yn.isna() & y.notna()
                raise TrialDataError(
                    f"{src}: column 'outcome' must be numeric; non-numeric values at {_rows(badv.to_numpy())}")
            na = ~np.isfinite(y.to_numpy(dtype=float))
            if na.any():
                raise TrialDataError(f"{src}: column 'outcome' has missing or infinite values at {_rows(na)}")
        # covariates
        for c in self.covariates:
            s = f[c]
            if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
                raise TrialDataError(
                    f"{src}: covariate '{c}' must be numeric (dtype {s.dtype}); encode categories as dummies")
            v = s.to_numpy(dtype=float)
            if np.isnan(v).all():
                raise TrialDataError(f"{src}: covariate '{c}' is missing (NaN) in every row")
            na = ~np.isfinite(v)
            if na.any():
                raise TrialDataError(
                    f"{src}: covariate '{c}' has missing or infinite values at {_rows(na)}; "
                    "impute and add a missingness indicator, or drop the rows")
        codes = self.cluster_codes
        J = codes.max() + 1
        if require_outcome and J < 2:
            raise TrialDataError(f"{src}: column 'cluster' has only one cluster ({cl.iloc[0]!r}); need at least 2")
        for c in self.covariates:
            v = f[c].to_numpy(dtype=float)
            if require_outcome and self.n > 1 and np.all(v == v[0]):
                raise TrialDataError(f"{src}: covariate '{c}' is constant ({v[0]:g}) in every row")
        for c in self.cluster_covariates:
            v = f[c].to_numpy(dtype=float)
            lo = np.full(J, np.inf); hi = np.full(J, -np.inf)
            np.minimum.at(lo, codes, v); np.maximum.at(hi, codes, v)
            varying = np.flatnonzero(lo != hi)
            if varying.size:
                labels = pd.factorize(cl, sort=True)[1][varying[:5]]
                raise TrialDataError(
                    f"{src}: cluster covariate '{c}' varies within cluster(s) {list(labels)}")
        if require_both_arms:
            t = trn.to_numpy(dtype=float)
            n1 = np.bincount(codes, weights=t, minlength=J)
            nj = np.bincount(codes, minlength=J)
            labels = pd.factorize(cl, sort=True)[1]
            if self.design == "crt":
                mixed = np.flatnonzero((n1 > 0) & (n1 < nj))
                if mixed.size:
                    raise TrialDataError(
                        f"{src}: column 'treatment' varies within cluster(s) {list(labels[mixed[:5]])}; "
                        "in a cluster-randomized trial (design 'crt') treatment is assigned by cluster")
                for arm in (0, 1):
                    k = int(np.sum((n1 == nj) if arm == 1 else (n1 == 0)))
                    if k < 2:
                        raise TrialDataError(
                            f"{src}: column 'treatment': arm {arm} has {k} cluster(s); a CRT needs at "
                            "least 2 clusters per arm")
            else:
                one = np.flatnonzero((n1 == 0) | (n1 == nj))
                if one.size:
                    raise TrialDataError(
                        f"{src}: column 'treatment': cluster(s) {list(labels[one[:5]])} have only one arm; "
                        "in a multisite trial every site needs treated and control individuals")
        return self


def propensity(trial: TrialData) -> np.ndarray:
    """Known probability of treatment per row.

    CRT (treatment by cluster, any allocation ratio): the observed share of treated clusters.
    Multisite: each site's share of treated individuals (the design's within-site allocation).
    """
    codes = trial.cluster_codes
    a = trial.treatment
    J = int(codes.max()) + 1
    n = np.bincount(codes, minlength=J)
    share = np.bincount(codes, weights=a, minlength=J) / n
    if trial.design == "crt":
        e = np.full(trial.n, float(np.mean(share > 0.5)))
    else:
        e = share[codes]
    if not ((e > 0) & (e < 1)).all():
        bad = np.flatnonzero(~((e > 0) & (e < 1)))
        raise ValueError(f"{trial.name}: the treated share is 0 or 1 in the clusters of rows "
                         f"{bad[:8].tolist()}; those rows carry no information on the effect")
    return e


def make_trial(frame: pd.DataFrame, design: str, *, outcome: str = "outcome",
               treatment: str = "treatment", cluster: str = "cluster",
               individual_covariates: Iterable[str] = (), cluster_covariates: Iterable[str] = (),
               moderators: Iterable[str] = (), name: str = "trial", validate: bool = True,
               **validate_kw) -> TrialData:
    """Build a :class:`TrialData` from a user table, renaming the three core columns.

    The user's frame is copied, never changed.
    """
    ren = {outcome: "outcome", treatment: "treatment", cluster: "cluster"}
    for role, col in (("outcome", outcome), ("treatment", treatment), ("cluster", cluster)):
        if col not in frame.columns:
            raise TrialDataError(f"{name}: {role} column '{col}' not found; columns are {list(frame.columns)}")
    roles = {outcome: "outcome", treatment: "treatment", cluster: "cluster"}
    if len(roles) < 3:
        raise TrialDataError(f"{name}: the outcome, treatment and cluster columns must be three different "
                             f"columns, got outcome '{outcome}', treatment '{treatment}', cluster '{cluster}'")
    ind, clu, mod = list(individual_covariates), list(cluster_covariates), list(moderators)
    for c in dict.fromkeys(ind + clu + mod):
        if c in roles:
            raise TrialDataError(f"{name}: covariate '{c}' is the {roles[c]} column; a column cannot be "
                                 f"both the {roles[c]} and a covariate")
        if c in CORE_COLUMNS:
            raise TrialDataError(f"{name}: covariate '{c}' has a reserved name ('outcome', 'treatment' and "
                                 f"'cluster' name the roles in the analysis table); rename the column "
                                 f"'{c}' in the file")
    keep = list(dict.fromkeys([outcome, treatment, cluster] + ind + clu))
    missing = [c for c in ind + clu if c not in frame.columns]
    if missing:
        raise TrialDataError(f"{name}: covariate column(s) {missing} not found; columns are {list(frame.columns)}")
    f = frame[keep].rename(columns=ren).reset_index(drop=True).copy()
    td = TrialData(f, design, tuple(ind), tuple(clu), tuple(mod), name)
    return td.validate(**validate_kw) if validate else td
