"""The method registry: name -> estimator class, imported lazily.

Each entry names the module and class that implement the method, so that running the OTR study
never imports the heavy CATE libraries (stochtree, gpboost, econml).

>>> from clusterhte import methods
>>> est = methods.get("q-fe")()
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from clusterhte.methods.base import CateResult, Estimator, MethodError


@dataclass(frozen=True)
class MethodInfo:
    name: str
    module: str
    cls: str
    design: str  # "crt" or "multisite"
    study: str   # "crt" (CATE study) or "otr"


_OTR_Q = [("q-base", "QBase"), ("q-fe", "QFe"), ("q-ri", "QRi"), ("q-rs", "QRs"),
          ("q-dm", "QDm"), ("q-dm-ri", "QDmRi"), ("q-dm-rs", "QDmRs")]
_OTR_W = [("w-base", "WBase"), ("w-noaug", "WNoaug"), ("w-aug", "WAug"), ("w-augid", "WAugID"),
          ("ws-noaug", "WSNoaug"), ("ws-aug", "WSAug"), ("ws-augid", "WSAugID")]
_CRT = [("ribart", "bart", "RiBART"), ("mixedbart", "bart", "MixedBART"),
        ("stan4bart", "bart", "Stan4BART"), ("mbcf", "bcf", "MBCF"),
        ("cf", "causal_forest", "CausalForest"), ("merf", "em_trees", "MERF"),
        ("megb", "em_trees", "MEGB"), ("gpboost", "gpboost", "GPBoost"),
        ("mermboost", "mermboost", "Mermboost"), ("gamm", "gamm", "GAMM"), ("lmm", "lmm", "LMM")]

REGISTRY: dict[str, MethodInfo] = {}
for _n, _c in _OTR_Q:
    REGISTRY[_n] = MethodInfo(_n, "clusterhte.methods.qlearning", _c, "multisite", "otr")
for _n, _c in _OTR_W:
    REGISTRY[_n] = MethodInfo(_n, "clusterhte.methods.weighting", _c, "multisite", "otr")
for _n, _m, _c in _CRT:
    REGISTRY[_n] = MethodInfo(_n, f"clusterhte.methods.{_m}", _c, "crt", "crt")

OTR_METHODS = [n for n, _ in _OTR_Q + _OTR_W]
CRT_METHODS = [n for n, _, _ in _CRT]


def names(study: str | None = None) -> list[str]:
    """Registered method names, optionally only those of one study ("otr" or "crt")."""
    return [n for n, i in REGISTRY.items() if study is None or i.study == study]


def get(name: str) -> type[Estimator]:
    """The estimator class registered under ``name`` (case-insensitive)."""
    key = str(name).lower()
    if key not in REGISTRY:
        raise MethodError(f"unknown method {name!r}; known methods: {', '.join(REGISTRY)}")
    info = REGISTRY[key]
    return getattr(importlib.import_module(info.module), info.cls)


def make(name: str, params: dict | None = None, random_state: int | None = None) -> Estimator:
    """Instantiate ``name`` with hyperparameters ``params``, checking their names and types."""
    cls = get(name)
    params = dict(params or {})
    defaults = cls.default_params()
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise MethodError(f"method '{name}': unknown hyperparameter(s) {unknown}; "
                          f"allowed: {sorted(defaults)}")
    for k, v in params.items():
        d = defaults[k]
        if d is None or v is None:
            continue
        ok_num = isinstance(d, (int, float)) and not isinstance(d, bool)
        if isinstance(d, bool) and not isinstance(v, bool):
            raise MethodError(f"method '{name}': hyperparameter '{k}' must be true/false, got {v!r}")
        if ok_num and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise MethodError(f"method '{name}': hyperparameter '{k}' must be a number, got {v!r}")
        if isinstance(d, str) and not isinstance(v, str):
            raise MethodError(f"method '{name}': hyperparameter '{k}' must be a string, got {v!r}")
    return cls(**params, random_state=random_state)


__all__ = ["CateResult", "Estimator", "MethodError", "REGISTRY", "OTR_METHODS", "CRT_METHODS",
           "get", "make", "names"]
