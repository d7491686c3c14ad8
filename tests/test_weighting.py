"""Weighting OTR estimators (W-*, WS-*): design, propensities, augmentation, penalties, scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from clusterhte import methods
from clusterhte.data.trial import TrialData
from clusterhte.methods.base import MethodError
from clusterhte.methods.weighting import (WAug, WAugID, WBase, WNoaug, WSAug, WSAugID, WSNoaug,
                                          cluster_dummies)

ALL = [WBase, WNoaug, WAug, WAugID, WSNoaug, WSAug, WSAugID]
MODS = ("X3", "X4", "X5")


def make_multisite(seed: int, J: int = 20, n_j: int = 60, n_test: int | None = None):
    """Tiny multisite generator (Suk & Park Design 1 style): (train, test, delta_test).

    X1..X5 iid N(0,1); cluster-level U1 ~ N(0,1), R ~ N(0, 0.9^2); trt ~ Bernoulli(plogis(0.8 R_j))
    redrawn until every training cluster has both arms; delta = 0.2 + 0.5 X3 - 0.2 X4 - 0.2 X5;
    Y = 0.7 + X1 + X2 - 2 X3 + X4 + 0.5 X5 + 2.5 U1 + delta * trt + e. The test set has new units
    in the same clusters.
    """
    rng = np.random.default_rng(seed)
    U1, R = rng.normal(size=J), rng.normal(0, 0.9, J)
    prob = 1 / (1 + np.exp(-0.8 * R))

    def draw(nj, check):
        cl = np.repeat(np.arange(1, J + 1), nj)
        X = rng.normal(size=(J * nj, 5))
        while True:
            t = rng.binomial(1, prob[cl - 1]).astype(float)
            share = np.bincount(cl - 1, weights=t) / nj
            if not check or np.all((share > 0) & (share < 1)):
                break
        delta = 0.2 + 0.5 * X[:, 2] - 0.2 * X[:, 3] - 0.2 * X[:, 4]
        y = (0.7 + X[:, 0] + X[:, 1] - 2 * X[:, 2] + X[:, 3] + 0.5 * X[:, 4] + 2.5 * U1[cl - 1]
             + delta * t + rng.normal(size=J * nj))
        f = pd.DataFrame({"cluster": cl, "treatment": t, "outcome": y})
        for k in range(5):
            f[f"X{k + 1}"] = X[:, k]
        return TrialData(f, "multisite", ("X1", "X2", "X3", "X4", "X5"), (), MODS), delta

    train, _ = draw(n_j, True)
    test, delta = draw(n_test or n_j, False)
    return train, test, delta


@pytest.fixture(scope="module")
def sim():
    return make_multisite(3)


def _design(est, td):
    x = td.X(MODS)
    if est._site_moderators:
        x = np.column_stack([x, cluster_dummies(td.cluster, est.dummy_clusters_)])
    return (2 * td.treatment - 1)[:, None] * np.column_stack([np.ones(td.n), x])


def test_registry_and_interface():
    for cls in ALL:
        assert methods.get(cls.name) is cls
        est = methods.make(cls.name, {"nfolds": 5}, random_state=1)
        assert est.get_params() == {"penalized_moderators": None, "nfolds": 5, "nlambda": 100,
                                    "lambda_min_ratio": None, "max_refits": 5}
        assert cls.designs == ("multisite",) and not cls.has_intervals


def test_unpenalised_fit_equals_wls_on_pm1_design(sim):
    train, test, _ = sim
    for cls in (WBase, WNoaug, WAugID):
        est = cls(penalized_moderators=[], random_state=0).fit(train)
        assert np.all(est.penalty_factor_ == 0)
        ref = sm.WLS(train.outcome - est.offset_, _design(est, train), weights=est.weights_).fit()
        np.testing.assert_allclose(est.coef_, ref.params, rtol=1e-8, atol=1e-10)
        res = est.predict(test)
        np.testing.assert_allclose(res.point, np.column_stack([np.ones(test.n), test.X(MODS)]) @ ref.params,
                                   rtol=1e-8, atol=1e-10)


def test_penalty_factors_and_unpenalised_gradients(sim):
    train, _, _ = sim
    J = 20
    assert WAug().fit(train).penalty_factor_.tolist() == [0, 1, 1, 1]
    ws = WSAug().fit(train)
    assert ws.penalty_factor_.tolist() == [0, 0, 0, 0] + [1] * (J - 1)
    assert ws.columns_[:4] == ["Trt", "X3", "X4", "X5"] and ws.columns_[4] == "cluster[2]"
    # CCT-like lists: exactly the named moderators penalised (cluster dummies always penalised)
    w = WAugID(penalized_moderators=["X4", "X5"], random_state=2).fit(train)
    assert w.penalty_factor_.tolist() == [0, 0, 1, 1]
    ws = WSNoaug(penalized_moderators=["X3"], random_state=2).fit(train)
    assert ws.penalty_factor_.tolist() == [0, 1, 0, 0] + [1] * (J - 1)
    # behaviour: at the chosen lambda the unpenalised columns have a zero weighted-LS gradient
    for est in (w, ws):
        X = _design(est, train)
        r = train.outcome - est.offset_ - X @ est.coef_
        grad = X.T @ (est.weights_ * r) / est.weights_.sum()
        u = est.penalty_factor_ == 0
        assert np.all(est.coef_[u] != 0)
        # glmnet's tolerance; a penalised column would sit at lambda * vp * sd instead
        s = np.sqrt(np.cov(X, aweights=est.weights_, rowvar=False, bias=True).diagonal())
        assert np.all(np.abs(grad[u]) < 1e-2 * est.lambda_min_ * s[u])
        vp = est.cv_.penalty_factor
        assert np.all(np.abs(grad[~u]) <= est.lambda_min_ * vp[~u] * s[~u] * (1 + 1e-3))
    with pytest.raises(MethodError, match="'X9'"):
        WAug(penalized_moderators=["X3", "X9"]).fit(train)


def test_propensities(sim):
    train, _, _ = sim
    share = train.frame.groupby("cluster")["treatment"].transform("mean").to_numpy()
    np.testing.assert_allclose(WNoaug().fit(train).propensity_, share, rtol=1e-14)
    np.testing.assert_allclose(WBase().fit(train).propensity_, train.treatment.mean(), rtol=1e-14)
    est = WSAugID().fit(train)
    t = train.treatment
    np.testing.assert_allclose(est.weights_, np.where(t == 1, 1 / share, 1 / (1 - share)), rtol=1e-14)


def test_augmentation_offsets(sim):
    train, _, _ = sim
    f = train.frame
    ref_l = sm.OLS.from_formula("outcome ~ X1 + X2 + X3 + X4 + X5", f).fit().fittedvalues
    ref_s = sm.OLS.from_formula("outcome ~ X1 + X2 + X3 + X4 + X5 + C(cluster)", f).fit().fittedvalues
    np.testing.assert_allclose(WAug().fit(train).offset_, ref_l, rtol=1e-9)
    np.testing.assert_allclose(WSAug().fit(train).offset_, ref_l, rtol=1e-9)
    np.testing.assert_allclose(WAugID().fit(train).offset_, ref_s, rtol=1e-9)
    np.testing.assert_allclose(WSAugID().fit(train).offset_, ref_s, rtol=1e-9)
    assert np.all(WNoaug().fit(train).offset_ == 0)


def test_score_is_coef_at_lambda_min_and_unseen_clusters(sim):
    train, test, _ = sim
    est = WSAug(random_state=4).fit(train)
    cv = est.cv_
    np.testing.assert_array_equal(est.coef_, cv.coefs[cv.index_min])
    assert est.lambda_min_ == cv.lambda_min == cv.lambdas[cv.cvm == cv.cvm.min()].max()
    res = est.predict(test)
    D = (test.cluster[:, None] == np.arange(2, 21)[None, :]).astype(float)
    np.testing.assert_allclose(res.point, np.column_stack([np.ones(test.n), test.X(MODS), D]) @ est.coef_)
    np.testing.assert_array_equal(res.decision, (res.point > 0).astype(np.int8))
    # a cluster not seen in training: all dummies zero
    f = test.frame.head(10).copy()
    f["cluster"] = 999
    new = TrialData(f, "multisite", test.individual_covariates, (), MODS)
    np.testing.assert_allclose(est.predict(new).point,
                               np.column_stack([np.ones(10), new.X(MODS)]) @ est.coef_[:4])


def test_sign_pattern_on_a_clean_replicate():
    train, test, delta = make_multisite(5, J=20, n_j=100)
    for cls in ALL:
        res = cls(random_state=7).fit(train).predict(test)
        acc = np.mean((res.point > 0) == (delta > 0))
        assert acc > 0.75, (cls.name, acc)
    # score estimates delta/2: OLS slope of 2*score on delta near 1 for the augmented fit
    s = WSAugID(random_state=7).fit(train).predict(test).point
    assert 0.7 < np.polyfit(delta, 2 * s, 1)[0] < 1.3


def test_one_arm_cluster_raises_naming_it(sim):
    train, _, _ = sim
    f = train.frame.copy()
    f.loc[f["cluster"] == 7, "treatment"] = 1.0
    bad = TrialData(f, "multisite", train.individual_covariates, (), MODS, name="toy")
    with pytest.raises(MethodError, match=r"cluster\(s\) 7 \(share 1\)"):
        WNoaug().fit(bad)
    WBase().fit(bad)   # the overall share is still inside (0, 1)
    f["treatment"] = 0.0
    with pytest.raises(MethodError, match="overall treated share"):
        WBase().fit(TrialData(f, "multisite", train.individual_covariates, (), MODS))


def test_determinism_and_fresh_folds(sim):
    train, test, _ = sim
    a = WAug(random_state=11).fit(train)
    b = WAug(random_state=11).fit(train)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.predict(test).point, b.predict(test).point)
    np.testing.assert_array_equal(a.cv_.foldid, b.cv_.foldid)
    c = WAug(random_state=12).fit(train)
    assert not np.array_equal(a.cv_.foldid, c.cv_.foldid)
    # folds: individual-level, balanced sizes (sample(rep(1:5, length = n)))
    assert np.bincount(a.cv_.foldid)[1:].tolist() == [240] * 5


def test_refits_when_only_treatment_is_selected():
    # moderators unrelated to the effect, all penalised: CV usually keeps only Trt, so refits happen
    train, _, _ = make_multisite(8, J=10, n_j=40)
    f = train.frame.copy()
    rng = np.random.default_rng(0)
    for m in MODS:
        f[m] = rng.normal(size=len(f))
    td = TrialData(f, "multisite", train.individual_covariates, (), MODS)
    fits = [WNoaug(max_refits=3, random_state=s).fit(td) for s in range(6)]
    for est in fits:
        only_trt = np.all(est.coef_[1:] == 0)
        assert est.n_fits_ == 3 or not only_trt
        if est.n_fits_ < 3:
            assert not only_trt
    assert any(e.n_fits_ > 1 for e in fits)
    # the retained fit uses the n_fits_-th fold draw of the generator
    e = next(e for e in fits if e.n_fits_ > 1)
    rng = np.random.default_rng(e.random_state)
    base = np.resize(np.arange(1, 6), td.n)
    for _ in range(e.n_fits_):
        fold = rng.permutation(base)
    np.testing.assert_array_equal(e.cv_.foldid, fold)


def test_bad_hyperparameters_and_design(sim, crt_constant):
    train, _, _ = sim
    with pytest.raises(MethodError, match="nfolds"):
        WAug(nfolds=2).fit(train)
    with pytest.raises(MethodError, match="penalized_moderators"):
        WAug(penalized_moderators="X3").fit(train)
    with pytest.raises(MethodError, match="multisite"):
        WAug().fit(crt_constant[0])
    f = train.frame.copy()
    no_mod = TrialData(f, "multisite", train.individual_covariates, (), ())
    with pytest.raises(MethodError, match="no moderators"):
        WAug().fit(no_mod)


@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")
def test_augid_offset_with_an_aliased_cluster_covariate(sim):
    # a cluster-level covariate is collinear with the cluster dummies: lm() drops it, fitted values agree
    train, _, _ = sim
    f = train.frame.copy()
    f["V"] = np.random.default_rng(3).normal(size=20)[f["cluster"].to_numpy() - 1]
    td = TrialData(f, "multisite", train.individual_covariates, ("V",), MODS)
    ref = sm.OLS.from_formula("outcome ~ X1 + X2 + X3 + X4 + X5 + V + C(cluster)", f).fit().fittedvalues
    np.testing.assert_allclose(WAugID().fit(td).offset_, ref, rtol=1e-9)
    ref_l = sm.OLS.from_formula("outcome ~ X1 + X2 + X3 + X4 + X5 + V", f).fit().fittedvalues
    np.testing.assert_allclose(WAug().fit(td).offset_, ref_l, rtol=1e-9)


@pytest.mark.slow
def test_design1_accuracy_ordering_as_in_the_paper():
    # Suk & Park (2023) Section 5, Design 1: augmentation raises accuracy, augID most of all
    acc = {c.name: [] for c in ALL}
    for r in range(40):
        train, test, delta = make_multisite(100 + r, J=25, n_j=150)
        for cls in ALL:
            p = cls(random_state=r).fit(train).predict(test).point
            acc[cls.name].append(np.mean((p > 0) == (delta > 0)))
    m = {k: np.mean(v) for k, v in acc.items()}
    assert m["w-augid"] > m["w-aug"] > m["w-noaug"] > m["w-base"]
    assert m["ws-augid"] > m["ws-aug"] > m["ws-noaug"]
    assert m["ws-augid"] > 0.95 and m["w-augid"] > 0.95


def test_decisions_and_cv_agree_with_glmnet_given_r_folds():
    """W-*/WS-* with R's fold labels reproduce cv.glmnet (glmnet 4.1-6, values recorded by
    tests/data/glmnet/glmnet_reference.R) on Design 1-4 replicates at (J, n) = (25, 25): the
    lambda sequence, lambda.min, the coefficients at lambda.min and the test decisions."""
    import json
    from pathlib import Path

    from clusterhte import methods as M
    from clusterhte.data.trial import TrialData

    here = Path(__file__).parent / "data" / "glmnet"
    ref = json.loads((here / "glmnet_cv_reference.json").read_text())
    data = pd.read_csv(here / "otr_replicates.csv.gz")
    assert ref["meta"]["glmnet"] == "4.1.6" and len(ref["fits"]) == 35

    def trial(f):
        return TrialData(f.sort_values("row").reset_index(drop=True), "multisite",
                         ("X1", "X2", "X3", "X4", "X5"), (), ("X3", "X4", "X5"))

    agree = total = 0
    for fit in ref["fits"]:
        g = data[data["case"] == fit["case"]]
        tr, te = trial(g[g["split"] == "train"]), trial(g[g["split"] == "test"])
        est = M.make(fit["method"], {}, random_state=0).fit(tr, foldid=tr.frame["foldid"].to_numpy())
        lam = np.asarray(fit["lambda"])
        k = min(lam.size, est.cv_.lambdas.size)
        np.testing.assert_allclose(est.cv_.lambdas[:k], lam[:k], rtol=1e-10)
        np.testing.assert_allclose(est.cv_.cvm[:k], np.asarray(fit["cvm"])[:k], rtol=1e-3)
        assert est.lambda_min_ == pytest.approx(fit["lambda_min"], rel=1e-10), (fit["case"], fit["method"])
        np.testing.assert_allclose(est.coef_, fit["coef_min"], atol=1e-4)
        dec = est.predict(te).point > 0
        rdec = np.frombuffer(fit["decisions"].encode(), dtype=np.uint8) == ord("1")
        agree += int(np.sum(dec == rdec))
        total += dec.size
    print(f"W decisions agreeing with glmnet: {agree}/{total} = {agree / total:.5f}")
    assert agree / total >= 0.995


def test_foldid_is_checked():
    from clusterhte import methods as M

    tr = make_multisite(1, J=6, n_j=20)[0]
    with pytest.raises(MethodError, match="foldid has"):
        M.make("w-noaug", {}).fit(tr, foldid=np.ones(tr.n - 1))
    with pytest.raises(MethodError, match="at least 3 folds"):
        M.make("w-noaug", {}).fit(tr, foldid=np.resize([1, 2], tr.n))
