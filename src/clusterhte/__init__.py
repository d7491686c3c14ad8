"""clusterhte: treatment-effect heterogeneity in clustered randomized trials.

Two studies share one library and one workflow:

- CRT-CATE: conditional average treatment effects in two-arm cluster-randomized trials with
  mixed-effects machine learning (``clusterhte.methods``: ribart, mixedbart, stan4bart, mbcf, cf,
  merf, megb, gpboost, mermboost, gamm, lmm).
- Multisite-OTR: optimal treatment regimes from multisite trials (Suk & Park, Psychometrika 2023):
  seven Q-learning and seven weighting estimators.
"""

__version__ = "0.1.0"
