"""A user's own trial: read a CSV, Parquet or Stata file and build a validated TrialData.

Used by the trial sheet of the workflow (``config/trials.tsv``) and by ``clusterhte fit``; both go
through :func:`load_trial`, so a file accepted by one is accepted by the other and every error
names the file, the column and the rows at fault.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from clusterhte.data.trial import TrialData, TrialDataError, make_trial

READERS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".dta": "stata"}


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a user table by its extension (.csv/.tsv/.parquet/.dta); never modifies the file."""
    path = Path(path)
    if not path.exists():
        raise TrialDataError(f"{path}: file not found")
    if path.is_dir():
        raise TrialDataError(f"{path}: is a directory, expected a CSV, Parquet or Stata file")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise TrialDataError(f"{path}: unsupported file type '{path.suffix}'; expected one of "
                             f"{', '.join(sorted(READERS))}")
    if path.stat().st_size == 0:
        raise TrialDataError(f"{path}: the file is empty (0 bytes)")
    try:
        if kind in ("csv", "tsv"):
            df = pd.read_csv(path, sep="\t" if kind == "tsv" else ",")
        elif kind == "parquet":
            from clusterhte.io import read_parquet
            df = read_parquet(path)
        else:
            import pyreadstat
            df, _ = pyreadstat.read_dta(str(path))
    except TrialDataError:
        raise
    except pd.errors.EmptyDataError:
        raise TrialDataError(f"{path}: the file has no columns (empty table)") from None
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file, say which
        raise TrialDataError(f"{path}: could not be read as {kind}: {type(e).__name__}: {e}") from None
    if df.shape[0] == 0:
        raise TrialDataError(f"{path}: the table has a header but no rows")
    if kind in ("csv", "tsv"):
        names = _header(path, "\t" if kind == "tsv" else ",")
    else:
        names = [str(c) for c in df.columns]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise TrialDataError(f"{path}: column name(s) {dup} appear more than once in the header; "
                             "every column needs its own name")
    return df


def _header(path: Path, sep: str) -> list[str]:
    """Column names as written in the first line (pandas renames duplicates to 'age.1')."""
    import csv
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return [c.strip() for c in next(csv.reader(fh, delimiter=sep), [])]


OVERFLOW = 1e100  # |value| beyond this overflows squares and sums of squares in float64


def check_numeric_range(td: TrialData, src: str, names: dict[str, str]) -> None:
    """Outcome and covariates must be of a magnitude whose squares are finite (values like 1e300
    overflow every variance); name the column and rows."""
    for col in ["outcome", *td.covariates]:
        v = td.frame[col].to_numpy(dtype=float)
        big = np.abs(v) > OVERFLOW
        if big.any():
            from clusterhte.data.trial import _rows
            raise TrialDataError(f"{src}: column '{names.get(col, col)}' has values up to "
                                 f"{np.abs(v).max():.3g} at {_rows(big)}; rescale it (|value| below "
                                 f"{OVERFLOW:.0e}, e.g. other units)")


def check_collinear(td: TrialData, src: str, tol: float = 1e-9) -> None:
    """Covariates (with the intercept) must not be linearly dependent: name the columns involved.

    On the standardized covariate matrix with a column of ones, a singular value below ``tol``
    times the largest marks a dependence; the columns with a non-negligible weight in its right
    singular vector are the ones involved (e.g. ``x2 = 2*x1``, or dummies summing to 1).
    """
    cols = list(td.covariates)
    if not cols:
        return
    X = td.X(cols)
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    A = np.column_stack([np.ones(td.n), Z]) / np.sqrt(td.n)
    _, sv, vt = np.linalg.svd(A, full_matrices=False)
    small = sv < tol * sv[0]
    if td.n < A.shape[1]:
        raise TrialDataError(f"{src}: {len(cols)} covariates for {td.n} rows; need more rows than covariates")
    if small.any():
        w = np.abs(vt[small]).max(axis=0)[1:]
        involved = [c for c, x in zip(cols, w) if x > 1e-6]
        raise TrialDataError(f"{src}: covariates {involved} are collinear (one is a linear combination "
                             "of the others, or of a constant); drop one of them")


def split_list(value) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']; empty, '-' or NaN -> []."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    s = str(value).strip()
    if s in ("", "-", "none", "None"):
        return []
    return [v.strip() for v in s.split(",") if v.strip()]


def load_trial(path: str | os.PathLike, design: str, *, outcome: str, treatment: str, cluster: str,
               individual_covariates: Iterable[str] = (), cluster_covariates: Iterable[str] = (),
               moderators: Iterable[str] = (), id_column: str | None = None,
               name: str | None = None) -> TrialData:
    """Read ``path`` and return the validated analysis table (core columns renamed).

    ``id_column``, when given, must identify rows uniquely; it is kept as a column named ``id``
    so results can be joined back to the user's data.
    """
    df = read_table(path)
    src = str(path)
    if design not in ("crt", "multisite"):
        raise TrialDataError(f"{src}: design must be 'crt' or 'multisite', got {design!r}")
    if id_column is not None:
        if id_column not in df.columns:
            raise TrialDataError(f"{src}: id column '{id_column}' not found; columns are {list(df.columns)}")
        dup = df[id_column].duplicated(keep=False).to_numpy()
        if dup.any():
            rows = ", ".join(str(i) for i in df.index[dup][:8])
            raise TrialDataError(f"{src}: id column '{id_column}' has duplicated values at rows {rows}")
    td = make_trial(df, design, outcome=outcome, treatment=treatment, cluster=cluster,
                    individual_covariates=list(individual_covariates),
                    cluster_covariates=list(cluster_covariates), moderators=list(moderators),
                    name=src, validate=False)  # messages name the file; the trial's name is set below
    if id_column is not None:
        frame = td.frame.copy()
        frame.insert(0, "id", df[id_column].to_numpy())
        td = TrialData(frame, td.design, td.individual_covariates, td.cluster_covariates,
                       td.moderators, td.name)
    try:
        td = td.validate()
    except TrialDataError as e:
        # name the user's columns, not the canonical ones
        msg = str(e)
        for canon, user in (("outcome", outcome), ("treatment", treatment), ("cluster", cluster)):
            if canon != user:
                msg = msg.replace(f"column '{canon}'", f"column '{user}' ({canon})")
        raise TrialDataError(msg) from None
    check_numeric_range(td, src, {"outcome": f"{outcome}" + (" (outcome)" if outcome != "outcome" else "")})
    if name is not None:
        td = replace(td, name=name)
    check_collinear(td, src)
    y = td.outcome
    if np.all(y == y[0]):
        warnings.warn(f"{src}: outcome column '{outcome}' is constant ({y[0]:g}) in every row; every "
                      "CATE will be 0 and its interval has no width", TrialDataWarning, stacklevel=2)
    return td


class TrialDataWarning(UserWarning):
    """A trial that can be analysed but whose results will not be informative."""
