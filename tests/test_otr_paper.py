"""Paper-scale check (slow): Design 1 at (J, n) = (25, 25) with 200 replicates lands within 1.5
percentage points of the mean accuracies of Suk & Park (2023), Figure 1.

Run with ``make test-slow``; prints all 14 mean accuracies.
"""

import pytest

from clusterhte import methods
from clusterhte.stages import otr

PAPER = {"q-fe": 0.924, "q-ri": 0.924, "q-dm": 0.924, "q-dm-ri": 0.924, "q-rs": 0.908, "q-dm-rs": 0.907}


@pytest.mark.slow
def test_design1_small_sample_accuracy():
    reps = 200
    sim = otr.simulate("d1_J25_n25", 0, reps, reps, seed=2023)
    fits = {m: otr.fit(sim, "d1_J25_n25", m, {}, seed=2023, log=open("/dev/null", "w"))
            for m in methods.OTR_METHODS}
    per_rep = otr.evaluate(sim, fits)
    acc = per_rep[per_rep.metric == "accuracy"].groupby("method").value.mean()
    print("\nDesign 1, (25, 25), 200 replicates, mean accuracy:")
    for m in methods.OTR_METHODS:
        print(f"  {m:<9} {100 * acc[m]:.1f} %")
    for m, target in PAPER.items():
        assert abs(acc[m] - target) <= 0.015, f"{m}: {acc[m]:.3f} vs paper {target:.3f}"
