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

A second check concerns the cluster level. Columns constant within clusters (intercept, arm,
cluster covariates and their treatment interactions) are estimated from the ``J`` cluster means,
which also carry the random intercepts. When their rank reaches ``J`` they span every cluster
indicator: the fixed effects absorb the random intercepts, the restricted likelihood no longer
depends on the cluster variance, and no between-cluster residual is left to measure the error of
any cluster-level contrast (the ATE of a CRT among them). lme4 still returns a fit (a singular one);
:func:`require_between_cluster_df` refuses it with a message naming the columns.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["ALIAS_TOL", "AliasedColumnsWarning", "independent_columns", "drop_aliased",
           "between_cluster_df", "require_between_cluster_df"]

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


def between_cluster_df(X: np.ndarray, codes: np.ndarray) -> tuple[int, np.ndarray]:
    """(``J`` minus the rank of the columns of ``X`` that are constant within clusters, mask of those
    columns); ``codes`` are cluster codes ``0..J-1``. The rank uses the in-order test of
    :func:`independent_columns` on the ``J x q`` matrix of cluster values."""
    X = np.asarray(X, dtype=float)
    codes = np.asarray(codes)
    J = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=J).astype(float)
    means = np.zeros((J, X.shape[1]))
    np.add.at(means, codes, X)
    means /= counts[:, None]
    dev = np.abs(X - means[codes]).max(axis=0)
    const = dev <= 1e-10 * (1.0 + np.abs(X).max(axis=0))
    rank = int(independent_columns(means[:, const]).sum()) if const.any() else 0
    return J - rank, const


def require_between_cluster_df(X: np.ndarray, codes: np.ndarray, names, what: str, hint: str) -> int:
    """The between-cluster residual df of :func:`between_cluster_df`; raises
    :class:`~clusterhte.data.trial.TrialDataError` when it is below 1 (see the module docstring);
    ``what`` says whose design, ``hint`` how to make the model smaller."""
    from clusterhte.data.trial import TrialDataError

    df, const = between_cluster_df(X, codes)
    if df < 1:
        cols = [nm for nm, c in zip(names, const) if c]
        J = int(np.asarray(codes).max()) + 1
        raise TrialDataError(
            f"{what}: the trial has {J} clusters and the model {J - df} independent cluster-level "
            f"columns ({', '.join(cols)}), so no between-cluster degree of freedom is left: the "
            f"cluster variance cannot be estimated and no cluster-level contrast (the ATE among "
            f"them) has an error estimate. {hint}")
    return df
