"""The REML criterion's compiled per-cluster loops against its batched-numpy form."""

from __future__ import annotations

import numpy as np
import pytest

from clusterhte.mixed import reml as R


@pytest.mark.parametrize("q", [1, 2, 3])
@pytest.mark.parametrize("reml", [True, False])
def test_compiled_criterion_equals_batched_numpy(q, reml):
    """The compiled per-cluster loops give the batched-numpy deviance and gradient."""
    rng = np.random.default_rng(q + 10 * reml)
    J, m, p = 17, 9, 4
    g = np.repeat(np.arange(J), m)
    X = np.column_stack([np.ones(J * m), rng.normal(size=(J * m, p - 1))])
    Z = np.column_stack([np.ones(J * m), rng.normal(size=(J * m, q - 1))])
    y = X @ rng.normal(size=p) + np.einsum("ij,ij->i", Z, rng.normal(size=(J, q))[g]) + rng.normal(size=J * m)
    st = R.sufficient_stats(y, X, g, Z, J)
    r, c = R._tril_index(q)
    for _ in range(3):
        th = rng.normal(size=q * (q + 1) // 2)
        th[r == c] = np.abs(th[r == c])
        d1, g1 = R._deviance(th, st, reml)
        d0, g0 = R._deviance_numpy(th, st, reml)
        assert d1 == pytest.approx(d0, rel=1e-12)
        np.testing.assert_allclose(g1, g0, rtol=1e-9, atol=1e-9)
        assert R._deviance(th, st, reml, grad=False) == pytest.approx(d0, rel=1e-12)


def _problem(q, seed, slope_sd=1.0):
    rng = np.random.default_rng(seed)
    J, m, p = 15, 8, 3
    g = np.repeat(np.arange(J), m)
    X = np.column_stack([np.ones(J * m), rng.normal(size=(J * m, p - 1))])
    Z = np.column_stack([np.ones(J * m), rng.integers(0, 2, size=(J * m, q - 1))])
    b = rng.normal(size=(J, q)) * np.r_[1.0, np.full(q - 1, slope_sd)]
    y = X @ rng.normal(size=p) + np.einsum("ij,ij->i", Z, b[g]) + rng.normal(size=J * m)
    return R.sufficient_stats(y, X, g, Z, J)


@pytest.mark.skipif(not R._LBFGSB_LOOP_OK, reason="scipy version not followed by the direct loop")
@pytest.mark.parametrize("q", [2, 3])
def test_direct_lbfgsb_loop_equals_scipy_minimize(q):
    """The direct L-BFGS-B loop makes the same iterates as scipy.optimize.minimize: the same
    optimum, value, iteration count and message, bit for bit (also from starts that end on the
    boundary, and when the iteration limit stops it)."""
    r, c = R._tril_index(q)
    bounds = [(0.0, None) if i == j else (None, None) for i, j in zip(r, c)]
    for seed, slope_sd in ((1, 1.0), (2, 0.0), (3, 0.3)):
        st = _problem(q, seed, slope_sd)
        for th0 in R._starts(q) + [np.where(r == c, -0.5, 0.2)]:
            for reml, maxiter in ((True, 500), (False, 500), (True, 2)):
                a = R._lbfgsb(st, reml, th0, bounds, maxiter, direct=True)
                b = R._lbfgsb(st, reml, th0, bounds, maxiter, direct=False)
                assert a["x"].tobytes() == b["x"].tobytes() and a["fun"] == b["fun"]
                assert (a["nit"], a["success"], a["message"]) == (b["nit"], b["success"], b["message"])
