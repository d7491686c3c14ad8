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
