"""Acceptance of every CRT-CATE estimator at the quick settings of config/config.yaml:
the CATEs track a strong linear effect modifier, and the cluster random intercept does not absorb
a constant cluster-level treatment effect (true 1.0, ICC 0.2)."""

import numpy as np
import pytest

from clusterhte import config as chconfig, methods
from conftest import ROOT

QUICK = chconfig.load_yaml(ROOT / "config" / "config.yaml")["crt"]
PAPER = chconfig.load_yaml(ROOT / "config" / "methods.yaml")


def quick(name):
    return chconfig.method_params(PAPER, QUICK, name)


@pytest.mark.parametrize("name", methods.CRT_METHODS)
def test_linear_modifier(name, crt_linear):
    td, tau = crt_linear
    res = methods.make(name, quick(name), random_state=7).fit(td).predict(td)
    assert np.all(np.isfinite(res.point))
    assert np.corrcoef(res.point, tau)[0, 1] >= 0.8
    assert np.all(res.lower <= res.point + 1e-9) and np.all(res.point <= res.upper + 1e-9)


@pytest.mark.parametrize("name", methods.CRT_METHODS)
def test_random_intercept_does_not_absorb_the_effect(name, crt_constant):
    td, _ = crt_constant
    res = methods.make(name, quick(name), random_state=7).fit(td).predict(td)
    assert abs(res.point.mean() - 1.0) < 0.3, res.point.mean()


@pytest.mark.parametrize("name", methods.CRT_METHODS)
def test_code_defaults_equal_methods_yaml(name):
    defaults = methods.get(name).default_params()
    for k, v in (PAPER.get(name) or {}).items():
        assert defaults[k] == v, (name, k)
