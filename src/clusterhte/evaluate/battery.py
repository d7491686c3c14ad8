"""Run CRT estimators over the scenario battery (:mod:`clusterhte.simulate.battery`).

``python -m clusterhte.evaluate.battery --reps 10 --settings quick`` prints the method ×
scenario table (means over replicates) and, with ``--out``, writes the per-replicate table as CSV;
``--set megb.effect_interval=shrunk`` overrides one hyperparameter; ``--scenarios`` also takes the
other designs of :data:`clusterhte.simulate.battery.OTHER_DESIGNS` (``tiny``, ``null20``,
``two_to_one``, ...).
A method that raises on a replicate is recorded as failed (with its error) and the run goes on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clusterhte import methods, seeds
from clusterhte.simulate.battery import SCENARIOS, get_scenario, metrics, simulate

SUMMARY_METRICS = ("pehe", "coverage", "width", "cate_sd", "true_sd", "corr", "zero_in_interval",
                   "ate_error", "ate_covered", "seconds", "failed")


def settings(which: str = "quick", root: str | Path | None = None) -> dict[str, dict]:
    """Per-method hyperparameters: ``paper`` = ``config/methods.yaml``; ``quick`` = the same with
    the ``trials`` section's ``method_overrides`` of ``config/config.yaml`` (the CI settings: what a
    user's own trial is analysed with in the default run; they differ from the ``crt`` study's only
    in the LMM, which the study pins to the paper's linear form)."""
    from clusterhte.config import load_yaml, method_params

    root = Path(root) if root is not None else Path(__file__).resolve().parents[3]
    mcfg = load_yaml(root / "config" / "methods.yaml")
    scfg = load_yaml(root / "config" / "config.yaml").get("trials", {}) if which == "quick" else {}
    return {m: method_params(mcfg, scfg, m) for m in methods.CRT_METHODS}


def run(method_names, scenario_names=None, reps: int = 10, params: dict[str, dict] | None = None,
        seed: int = 20231, log=sys.stderr) -> pd.DataFrame:
    """Per-replicate battery metrics: one row per (scenario, rep, method)."""
    scenario_names = list(scenario_names or SCENARIOS)
    params = params or {}
    rows = []
    for sc in scenario_names:
        for r in range(int(reps)):
            trial, tau = simulate(sc, seeds.rng(seed, "battery", sc, r))
            for m in method_names:
                t0 = time.perf_counter()
                row = {"scenario": sc, "rep": r, "method": m, "n": trial.n, "failed": 0.0, "error": ""}
                try:
                    est = methods.make(m, params.get(m), random_state=seeds.int_seed(seed, "battery", sc, r, m))
                    res = est.fit(trial).predict(trial)
                    row.update(metrics(tau, res.point, res.lower, res.upper, res.ate()))
                except Exception as e:  # noqa: BLE001 - a failure is a result of the battery
                    row.update(failed=1.0, error=f"{type(e).__name__}: {e}"[:300])
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
                if log is not None:
                    status = "FAILED " + row["error"] if row["failed"] else (
                        f"pehe {row['pehe']:.3f} cov {row['coverage']:.2f} sd {row['cate_sd']:.3f}")
                    print(f"[battery] {sc} rep {r} {m}: {status} ({row['seconds']:.1f} s)", file=log, flush=True)
    return pd.DataFrame(rows)


def summarise(per_rep: pd.DataFrame) -> pd.DataFrame:
    """Means over replicates per (method, scenario); ``failed`` is the number of failed fits."""
    cols = [c for c in SUMMARY_METRICS if c in per_rep.columns]
    g = per_rep.groupby(["method", "scenario"], sort=False)
    out = g[[c for c in cols if c != "failed"]].mean()
    out["failed"] = g["failed"].sum()
    return out.reset_index()


def with_override(params: dict[str, dict], item: str, error) -> dict[str, dict]:
    """``params`` with ``METHOD.PARAM=VALUE`` applied (the value read as YAML); ``error`` reports a
    malformed item or an unknown method or hyperparameter."""
    import yaml

    key, sep, value = item.partition("=")
    method, dot, name = key.partition(".")
    if not (sep and dot and method and name):
        error(f"--set {item!r}: expected METHOD.PARAM=VALUE, e.g. megb.effect_interval=shrunk")
    if method not in params:
        error(f"--set {item!r}: unknown method {method!r}; CRT methods: {', '.join(params)}")
    known = methods.get(method).default_params()
    if name not in known:
        error(f"--set {item!r}: method {method!r} has no hyperparameter {name!r}; it has {', '.join(known)}")
    return {**params, method: {**params[method], name: yaml.safe_load(value)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m clusterhte.evaluate.battery", description=__doc__)
    p.add_argument("--methods", default=",".join(methods.CRT_METHODS))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--settings", choices=("quick", "paper"), default="quick")
    p.add_argument("--seed", type=int, default=20231)
    p.add_argument("--out", help="CSV of the per-replicate metrics")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                   help="override one hyperparameter (YAML value), e.g. megb.effect_interval=shrunk; repeatable")
    a = p.parse_args(argv)
    params = settings(a.settings)
    for item in a.set:
        params = with_override(params, item, p.error)
    for name in a.scenarios.split(","):
        try:
            get_scenario(name)
        except ValueError as e:
            p.error(str(e))
    per_rep = run(a.methods.split(","), a.scenarios.split(","), a.reps, params, a.seed)
    if a.out:
        per_rep.to_csv(a.out, index=False)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(summarise(per_rep).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
