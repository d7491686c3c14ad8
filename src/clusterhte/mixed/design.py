"""Aliased (linearly dependent) columns of a fixed-effects design, found and dropped as R does.

lme4 (``lmer``'s ``control = lmerControl(check.rankX = "message+drop.cols")``, the default) and
``lm``/mgcv's parametric part find the rank of the model matrix with R's pivoted QR (LINPACK
``dqrdc2``, tolerance ``1e-7``): a column whose norm, after removing its projection on the columns
*before* it that are kept, is below ``1e-7`` times its original norm is aliased and moved to the
end; lme4 then drops it ("fixed-effect model matrix is rank deficient so dropping k columns /
coefficients") and reports the remaining coefficients. :func:`independent_columns` does the same
in-order test (modified Gram-Schmidt, one pass per column; ``p`` is small), so the same columns are
dropped as in lme4 for a design with the same column order.

In a trial with few clusters this happens with cluster-level covariates: a binary cluster covariate
``V`` equal to the arm (``V = A``) or to its complement, or ``A x V`` all zero (no treated cluster
has ``V = 1``). The coefficient of a dropped column is not estimable; it is reported as 0 in
``beta`` (lme4's ``predict`` does the same) and the CATE contrast then has no term for it.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["ALIAS_TOL", "AliasedColumnsWarning", "independent_columns", "drop_aliased"]

ALIAS_TOL = 1e-7  # R's qr() / lme4 rank tolerance


class AliasedColumnsWarning(UserWarning):
    """Columns of a design were dropped because they are linear combinations of earlier ones."""


def independent_columns(X: np.ndarray, tol: float = ALIAS_TOL) -> np.ndarray:
    """Boolean mask of the columns kept by the in-order rank test (see the module docstring).

    An all-zero column is aliased. The first column of an all-zero design is dropped too.
    """
    X = np.asarray(X, dtype=float)
    n, p = X.shape
    keep = np.zeros(p, dtype=bool)
    Q = np.empty((n, 0))
    for k in range(p):
        x = X[:, k]
        norm = np.linalg.norm(x)
        if norm == 0 or not np.isfinite(norm):
            continue
        r = x - Q @ (Q.T @ x)
        r = r - Q @ (Q.T @ r)            # re-orthogonalise (twice is enough)
        rn = np.linalg.norm(r)
        if rn > tol * norm:
            keep[k] = True
            Q = np.column_stack([Q, r / rn])
    return keep


def drop_aliased(X: np.ndarray, names, what: str, tol: float = ALIAS_TOL):
    """(X with the aliased columns removed, kept mask, dropped names); warns with
    :class:`AliasedColumnsWarning` naming the dropped columns (``what`` says whose design)."""
    keep = independent_columns(X, tol)
    dropped = [nm for nm, k in zip(names, keep) if not k]
    if dropped:
        warnings.warn(f"{what}: fixed-effect design is rank deficient, dropping {len(dropped)} aliased "
                      f"column(s) {dropped} (linear combinations of the columns before them; their "
                      f"coefficients are not estimable and are set to 0, as lme4/mgcv do)",
                      AliasedColumnsWarning, stacklevel=3)
    return np.asarray(X, dtype=float)[:, keep], keep, dropped
