"""OTR metrics against hand-computed values."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from clusterhte.evaluate import otr_metrics as om


def test_replicate_metrics_by_hand():
    delta = np.array([1.0, 2.0, -1.0, -2.0, 0.5])
    score = np.array([0.3, -0.1, 0.2, -0.5, 0.9])
    m = om.replicate_metrics(score, delta)
    # d* = 1 1 0 0 1, d^ = 1 0 1 0 1 -> TP 2, FP 1, FN 1, TN 1
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["share_treated"] == pytest.approx(3 / 5)
    assert m["auc"] == pytest.approx(roc_auc_score(delta > 0, score))
    assert m["f1"] == pytest.approx(f1_score(delta > 0, score > 0))
    # Spearman by hand: ranks of score (2,4? ) via numpy
    rs = np.argsort(np.argsort(score)); rd = np.argsort(np.argsort(delta))
    assert m["rank_corr"] == pytest.approx(np.corrcoef(rs, rd)[0, 1])


def test_auc_ties_count_half():
    assert om.auc_mann_whitney(np.array([1.0, 1.0]), np.array([1, 0])) == pytest.approx(0.5)


def test_congruence_matrix():
    d = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 1], [0, 0, 0]])
    cm = om.congruence_matrix(d)
    assert np.allclose(np.diag(cm), 1)
    assert cm[0, 1] == pytest.approx(3 / 4) and cm[0, 2] == pytest.approx(3 / 4)
    assert cm[1, 2] == pytest.approx(2 / 4)
    assert np.allclose(cm, cm.T)


def test_evaluate_chunk_and_failure():
    sim = pd.DataFrame({"rep": [0, 0, 0, 0], "split": ["train", "train", "test", "test"],
                        "row": [0, 1, 0, 1], "delta": [9, 9, 1.0, -1.0]})
    fits = pd.DataFrame({"rep": 0, "method": ["a", "a", "b", "b"], "row": [0, 1, 0, 1],
                         "cate": [0.5, -0.5, np.nan, np.nan], "decision": [1, 0, -1, -1],
                         "failed": [0, 0, 1, 1], "seconds": 0.1})
    out = om.evaluate_chunk(fits, sim)
    a = out[(out.method == "a") & out.other.isna()].set_index("metric").value
    assert a["accuracy"] == 1.0 and a["failed"] == 0
    b = out[(out.method == "b")].set_index("metric").value
    assert b["failed"] == 1 and "accuracy" not in b.index
    agg = om.aggregate(out.assign(design="d1"), ["design"])
    assert set(agg.columns) >= {"mean", "sd", "mcse", "n_reps"}


def test_evaluate_chunk_rejects_mismatched_chunks():
    sim = pd.DataFrame({"rep": [0], "split": ["test"], "row": [0], "delta": [1.0]})
    fits = pd.DataFrame({"rep": [1], "method": ["a"], "row": [0], "cate": [1.0], "decision": [1], "failed": [0]})
    with pytest.raises(ValueError, match="do not match"):
        om.evaluate_chunk(fits, sim)


def test_vectorised_evaluation_equals_the_replicate_loop():
    """The vectorised chunk evaluation gives the loop's values (ties, a failed replicate, a
    constant score, a method without seconds) row for row."""
    rng = np.random.default_rng(3)
    R, n = 4, 30
    sim = pd.DataFrame({"rep": np.repeat(np.arange(10, 10 + R), 2 * n),
                        "split": np.tile(np.repeat(["train", "test"], n), R),
                        "row": np.tile(np.arange(n), 2 * R), "delta": rng.normal(size=2 * n * R)})
    parts = []
    for m in ("a", "b", "c"):
        cate = np.round(rng.normal(size=R * n), 1)  # ties
        if m == "c":
            cate[:n] = 0.3                          # constant score in the first replicate
        failed = np.zeros(R * n, dtype=np.int8)
        if m == "b":
            failed[2 * n:3 * n] = 1                 # third replicate failed
            cate[2 * n:3 * n] = np.nan
        dec = np.where(failed == 1, -1, (cate > 0).astype(int))
        parts.append(pd.DataFrame({"rep": np.repeat(np.arange(10, 10 + R), n), "method": m,
                                   "row": np.tile(np.arange(n), R), "cate": cate, "decision": dec,
                                   "failed": failed, "seconds": 0.5}))
    fits = pd.concat(parts, ignore_index=True)
    for rank in ("spearman", "kendall"):
        fast = om.evaluate_chunk(fits, sim, rank)
        slow = om.evaluate_chunk_loop(fits, sim, rank)
        key = ["rep", "method", "metric", "other"]
        a = fast.fillna({"other": ""}).sort_values(key).reset_index(drop=True)
        b = slow.fillna({"other": ""}).sort_values(key).reset_index(drop=True)
        assert (a[key].astype(str).to_numpy() == b[key].astype(str).to_numpy()).all()
        assert np.allclose(a["value"], b["value"], equal_nan=True, rtol=0, atol=1e-12)


def test_rowwise_rank_equals_scipy_with_ties():
    from scipy import stats

    rng = np.random.default_rng(0)
    A = np.round(rng.normal(size=(6, 50)), 1)
    A[2] = 1.0
    np.testing.assert_array_equal(om._rowwise_rank(A), stats.rankdata(A, axis=-1))


def test_congruence_counts_equal_the_direct_sums():
    """The one-product congruence counts are the exact integers of the two direct sums, also
    with a failed method's -1 decisions, so the congruences are the same float64 values."""
    rng = np.random.default_rng(8)
    D = (rng.random((5, 6, 999)) > 0.4).astype(float)
    D[2, 3] = -1.0
    ref = np.einsum("rin,rjn->rij", D, D) + np.einsum("rin,rjn->rij", 1 - D, 1 - D)
    got = om.congruence_counts(D)
    assert got.dtype == np.float64 and got.tobytes() == ref.tobytes()
    # the int8 decisions of the fit tables (and booleans) give the same counts
    assert om.congruence_counts(D.astype(np.int8)).tobytes() == ref.tobytes()
    B = D[[0, 1, 3, 4]] > 0
    assert om.congruence_counts(B).tobytes() == om.congruence_counts(B.astype(float)).tobytes()
    assert np.array_equal(got / 999, ref / 999)
    for r in range(5):  # and the per-replicate matrix of congruence_matrix
        ok = [i for i in range(6) if not (r == 2 and i == 3)]
        assert np.array_equal(got[r][np.ix_(ok, ok)] / 999, om.congruence_matrix(D[r][ok].T))


def test_compiled_ranks_equal_the_numpy_ranks_bit_for_bit():
    from scipy import stats

    rng = np.random.default_rng(12)
    for shape in ((1, 1), (3, 7), (20, 500)):
        for A in (rng.normal(size=shape), rng.integers(0, 4, shape).astype(float),
                  np.round(rng.normal(size=shape), 1)):
            got, ref = om._rowwise_rank(A), om._rowwise_rank_numpy(A)
            assert got.tobytes() == ref.tobytes()
            np.testing.assert_array_equal(got, stats.rankdata(A, axis=-1))
    assert om._rowwise_rank(np.empty((0, 5))).shape == (0, 5)
