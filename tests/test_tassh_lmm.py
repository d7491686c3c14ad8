"""TASSH: the linear mixed model's ATE (SBP change ~ treatment + (1 | site), no covariates) against
statsmodels MixedLM on the same cleaned table, and against the published 95% CI (-6.1, -0.5)."""

from pathlib import Path

import numpy as np
import pytest

from clusterhte import methods
from clusterhte.data import tassh
from clusterhte.data.trial import TrialData

RDA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tassh" / "bp_ghana.rda"


@pytest.fixture(scope="module")
def trial():
    if not RDA.is_file():
        pytest.skip(f"TASSH data file not found at {RDA}")
    td, _ = tassh.clean(tassh.read_raw(RDA))
    return td


def test_lmm_ate_matches_statsmodels_and_published_ci(trial):
    from statsmodels.regression.mixed_linear_model import MixedLM

    f = trial.frame[["cluster", "treatment", "outcome"]]
    bare = TrialData(f, "crt", (), (), (), name="tassh (no covariates)").validate()
    res = methods.make("lmm").fit(bare).predict(bare)
    ate, lo, hi = res.ate()
    sm = MixedLM(f["outcome"].to_numpy(), np.column_stack([np.ones(len(f)), f["treatment"]]),
                 f["cluster"].to_numpy()).fit(reml=True)
    assert abs(ate - sm.params[1]) < 0.1
    assert -6.1 < ate < -0.5
    assert lo < ate < hi
    print(f"TASSH LMM ATE {ate:.3f} [{lo:.3f}, {hi:.3f}]; statsmodels {sm.params[1]:.3f} (SE {sm.bse[1]:.3f})")
