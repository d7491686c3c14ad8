"""Mixed-model numerics shared by the estimators (REML linear mixed models, BLUPs)."""
