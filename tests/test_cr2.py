"""CR2 cluster-robust covariance and Satterthwaite df against clubSandwich (R) and a hand computation.

Reference values: R 4.2, clubSandwich ``vcovCR(lm(...), cluster, type = "CR2")`` and
``coef_test(..., test = "Satterthwaite")`` (script in the docstring of each test).
"""

import numpy as np
import pandas as pd
import pytest
from pathlib import Path

from clusterhte.evaluate.cr2 import cr2_ols

DATA = Path(__file__).parent / "data"

# 4-cluster example (sizes 3, 2, 4, 2)
CL = np.array([1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4])
X4 = np.array([0.5, -1.2, 0.3, 1.1, -0.4, 0.0, 2.1, -0.7, 0.9, -1.5, 0.6])
Y4 = np.array([1.2, 0.4, 2.2, 3.1, 0.9, 1.7, 4.0, 0.2, 2.5, -0.8, 1.9])


def _hand_cr2(y, X, cl):
    """CR2 by the textbook formula with explicit n_j x n_j matrices (no shortcuts)."""
    M = np.linalg.inv(X.T @ X)
    e = y - X @ (M @ X.T @ y)
    meat = np.zeros((X.shape[1],) * 2)
    for g in np.unique(cl):
        i = cl == g
        Xj = X[i]
        w, Q = np.linalg.eigh(np.eye(i.sum()) - Xj @ M @ Xj.T)
        A = Q @ np.diag(w ** -0.5) @ Q.T
        s = Xj.T @ A @ e[i]
        meat += np.outer(s, s)
    return M @ meat @ M


def test_cr2_four_clusters_matches_hand_and_clubsandwich():
    """R: d <- data.frame(cl, x, y); f <- lm(y ~ x, d); vcovCR(f, d$cl, type = "CR2");
    coef_test(f, vcov = "CR2", cluster = d$cl, test = "Satterthwaite")."""
    X = np.column_stack([np.ones(11), X4])
    f = cr2_ols(Y4, X, CL)
    np.testing.assert_allclose(f.vcov, _hand_cr2(Y4, X, CL), rtol=1e-12)
    np.testing.assert_allclose(f.vcov, [[0.0064868485794253219, -0.0052456438805766684],
                                        [-0.0052456438805766692, 0.0120182098445722266]], rtol=1e-10)
    np.testing.assert_allclose(f.coef, [1.3795830629461392, 1.2497566515249836], rtol=1e-12)
    np.testing.assert_allclose(f.se, [0.080540974537345406, 0.109627596181674197], rtol=1e-10)
    r0, r1 = f.test([1, 0]), f.test([0, 1])
    assert r0["df"] == pytest.approx(2.8126461720204134, rel=1e-9)
    assert r1["df"] == pytest.approx(2.3479655894731191, rel=1e-9)
    assert r0["p_value"] == pytest.approx(0.0006257990570083154, rel=1e-7)
    assert r1["p_value"] == pytest.approx(0.0041506167865820497, rel=1e-7)
    # one-sided p is half the two-sided one for a positive t
    assert f.test([0, 1], alternative="greater")["p_value"] == pytest.approx(r1["p_value"] / 2)


def test_cr2_intercept_only_mean():
    """R: coef_test(lm(y ~ 1), vcov = "CR2", cluster = cl, test = "Satterthwaite")."""
    f = cr2_ols(Y4, np.ones((11, 1)), CL)
    r = f.test([1.0])
    assert r["estimate"] == pytest.approx(Y4.mean())
    assert r["se"] == pytest.approx(0.34203445807447208, rel=1e-10)
    assert r["df"] == pytest.approx(2.7129186602870807, rel=1e-9)
    assert r["p_value"] == pytest.approx(0.023997072377482817, rel=1e-7)


def test_cr2_twelve_clusters_and_contrast():
    """R (tests/data/cr2_reference.csv, 12 clusters of 2-9 rows): F <- lm(y ~ x1 + x2 + g);
    coef_test(F, "CR2", cluster = cl, test = "Satterthwaite"); linear_contrast(F, "CR2", cl,
    contrasts = matrix(c(0, 1, 0, -1), 1)); lm(y ~ 0 + factor(g)) for group means."""
    D = pd.read_csv(DATA / "cr2_reference.csv")
    X = np.column_stack([np.ones(len(D)), D.x1, D.x2, D.g])
    f = cr2_ols(D.y, X, D.cl)
    np.testing.assert_allclose(f.vcov, _hand_cr2(D.y.to_numpy(), X, D.cl.to_numpy()), rtol=1e-10)
    np.testing.assert_allclose(f.se, [0.78593142140192296, 0.28677322710131203, 1.15892906376817639,
                                      1.24515041879665667], rtol=1e-9)
    np.testing.assert_allclose([f.df(c) for c in np.eye(4)],
                               [4.6568150897970213, 7.1942287223364731, 4.5392711311634804,
                                5.6494374729826946], rtol=1e-8)
    np.testing.assert_allclose([f.test(c)["p_value"] for c in np.eye(4)],
                               [0.120626541056242376, 0.076303370405607071, 0.352833185060750010,
                                0.556562732877109223], rtol=1e-7)
    c = f.test([0, 1, 0, -1])
    assert c["estimate"] == pytest.approx(-0.185, abs=5e-4)
    assert c["se"] == pytest.approx(1.19, abs=5e-3)
    assert c["df"] == pytest.approx(5.64, abs=5e-3)
    assert c["p_value"] == pytest.approx(0.883, abs=5e-4)
    g = D.g.to_numpy()
    f2 = cr2_ols(D.y, np.column_stack([g == 0, g == 1]).astype(float), D.cl)
    np.testing.assert_allclose(f2.coef, [2.0891034482758624, 1.6510285714285711], rtol=1e-12)
    np.testing.assert_allclose(f2.se, [0.53062390142487259, 0.62012429174014405], rtol=1e-9)
    np.testing.assert_allclose([f2.df(c) for c in np.eye(2)], [3.6404193142802828, 4.4691596863487639],
                               rtol=1e-8)


def test_cr2_rejects_bad_input():
    with pytest.raises(ValueError, match="rank deficient"):
        cr2_ols(Y4, np.column_stack([np.ones(11), np.ones(11)]), CL)
    with pytest.raises(ValueError, match="at least 2 clusters"):
        cr2_ols(Y4, np.ones((11, 1)), np.ones(11))
    with pytest.raises(ValueError, match="finite"):
        cr2_ols(np.r_[Y4[:-1], np.nan], np.ones((11, 1)), CL)
