"""Dataset loaders and cleaning; the canonical trial table lives in :mod:`clusterhte.data.trial`."""

from clusterhte.data.trial import TrialData, TrialDataError, make_trial

__all__ = ["TrialData", "TrialDataError", "make_trial"]
