"""Validation of the workflow configuration and the per-method hyperparameters.

Called by the Snakefile at start-up, so a bad configuration stops the workflow before any job
runs, with one message naming the key at fault (e.g. ``otr.replicates``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from clusterhte import methods

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "workflow" / "schemas"


def _jsonschema():
    """``jsonschema``, imported without its optional ``rfc3987_syntax`` format checker.

    That module builds 38 lark grammars when imported (about 1.7 s), and jsonschema imports it
    whenever it is installed (Jupyter's dependencies install it). The config schema uses no string
    formats, so the workflow's start-up (every ``snakemake`` call, every cluster job's re-parse of the
    Snakefile) and the CLI skip it; the module stays importable for anyone else in the process.
    """
    if "jsonschema" in sys.modules:
        return sys.modules["jsonschema"]
    missing = object()
    saved = sys.modules.get("rfc3987_syntax", missing)
    sys.modules["rfc3987_syntax"] = None  # import fails with ImportError, which jsonschema tolerates
    try:
        import jsonschema
    finally:
        if saved is missing:
            del sys.modules["rfc3987_syntax"]
        else:
            sys.modules["rfc3987_syntax"] = saved
    return jsonschema


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


def _key(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        with open(path) as fh:
            return yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def deep_update(base: dict, new: dict) -> dict:
    """Update ``base`` in place with ``new``, merging nested dicts (like Snakemake's --config)."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


def validate_schema(cfg: dict, schema_path: str | Path, what: str = "config") -> None:
    schema = load_yaml(schema_path)
    validator = _jsonschema().Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        e = errors[0]
        raise ConfigError(f"{what} key '{_key(e.absolute_path)}': {e.message}")


def method_params(method_cfg: dict, study_cfg: dict, name: str) -> dict:
    """Hyperparameters of ``name``: methods.yaml entry updated by the study's overrides."""
    params = dict(method_cfg.get(name) or {})
    params.update((study_cfg.get("method_overrides") or {}).get(name) or {})
    return dict(sorted(params.items()))  # key order must not trigger reruns (Snakemake compares params)


# which registry study ("otr" or "crt") a config section draws its methods from
SECTION_STUDY = {"otr": "otr", "crt": "crt", "tassh": "crt", "cct": "otr"}
DESIGN_STUDY = {"crt": "crt", "multisite": "otr"}


def validate_methods(cfg: dict, method_cfg: dict, section: str, study: str | None = None,
                     scfg: dict | None = None) -> None:
    """Every listed method exists, fits the study, and its hyperparameters are valid."""
    scfg = cfg[section] if scfg is None else scfg
    study = study or SECTION_STUDY.get(section, section)
    for i, name in enumerate(scfg.get("methods", [])):
        key = f"{section}.methods[{i}]"
        if name not in methods.REGISTRY:
            raise ConfigError(f"config key '{key}': unknown method {name!r}; known {study} methods: "
                              f"{', '.join(methods.names(study))}")
        if methods.REGISTRY[name].study != study:
            raise ConfigError(f"config key '{key}': method {name!r} belongs to the "
                              f"'{methods.REGISTRY[name].study}' study, not '{study}'")
    for name in (scfg.get("method_overrides") or {}):
        if name not in methods.REGISTRY:
            raise ConfigError(f"config key '{section}.method_overrides.{name}': unknown method {name!r}")
    for name in scfg.get("methods", []):
        try:
            check_hyperparameters(name, method_params(method_cfg, scfg, name))
        except methods.MethodError as e:
            raise ConfigError(f"config key 'methods.yaml:{name}' (or '{section}.method_overrides.{name}'): {e}") from None


def validate(cfg: dict, method_cfg: dict, schema_path: str | Path | None = None) -> None:
    """Validate the run config and the method hyperparameters; raise one ConfigError."""
    validate_schema(cfg, schema_path or SCHEMA_DIR / "config.schema.yaml")
    for name in method_cfg:
        if name not in methods.REGISTRY:
            raise ConfigError(f"methods.yaml key '{name}': unknown method; known: {', '.join(methods.REGISTRY)}")
    for section in SECTION_STUDY:
        if section in cfg:
            validate_methods(cfg, method_cfg, section)
    for name, row in load_trials(cfg).items():
        validate_methods(cfg, method_cfg, f"trials.sheet row '{name}'", DESIGN_STUDY[row["design"]], row)


TRIAL_COLUMNS = ["name", "path", "design", "outcome", "treatment", "cluster", "individual_covariates",
                 "cluster_covariates", "moderators", "methods"]
LIST_COLUMNS = ["individual_covariates", "cluster_covariates", "moderators", "methods"]


# names the workflow uses itself: the studies, the built-in datasets and the placeholder wildcard
RESERVED_NAMES = frozenset({"otr", "crt", "tassh", "cct", "cct_synthetic", "trials", "none", "all"})
NAME_RE = __import__("re").compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


def read_sheet(path: Path):
    """The trial sheet as a table of strings (with the file's line number in ``_line``).

    Lines whose first non-blank character is ``#`` are comments; a ``#`` inside a field (a path
    or a name) is kept. Errors: an empty sheet, columns separated by spaces instead of tabs (a
    sheet copied from the README), missing columns.
    """
    import csv
    import io as _io

    import pandas as pd

    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [(n, l) for n, l in enumerate(text.splitlines(), start=1)
             if l.strip() and not l.lstrip().startswith("#")]
    expect = "\t".join(TRIAL_COLUMNS)
    if not lines:
        raise ConfigError(f"{path}: the trial sheet is empty; its first line must be the header "
                          f"(tab-separated): {expect}")
    header = lines[0][1]
    if "\t" not in header and len(header.split()) > 1:
        raise ConfigError(f"{path}: separate the columns with tabs, not spaces (line {lines[0][0]} has "
                          f"no tab; a sheet copied from a web page or the README has spaces)")
    rows = list(csv.reader(_io.StringIO("\n".join(l for _, l in lines)), delimiter="\t"))
    head = [h.strip() for h in rows[0]]
    missing = [c for c in TRIAL_COLUMNS if c not in head and c != "methods"]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing}; expected tab-separated columns {TRIAL_COLUMNS}")
    data = []
    for (n, _), r in zip(lines[1:], rows[1:]):
        if len(r) > len(head):
            raise ConfigError(f"{path} line {n}: {len(r)} tab-separated fields, the header has {len(head)}")
        data.append(dict(zip(head, r + [""] * (len(head) - len(r))), _line=n))
    return pd.DataFrame(data, columns=head + ["_line"], dtype=object).fillna("")


def load_trials(cfg: dict) -> dict[str, dict]:
    """Rows of the trial sheet (config key ``trials.sheet``) as {name: settings}, validated.

    Each row gets ``methods`` (default: every method that fits its design) and the section's
    ``method_overrides``. Errors name the sheet, the row and the column.
    """
    tcfg = cfg.get("trials") or {}
    sheet = tcfg.get("sheet")
    if not sheet:
        return {}
    import pandas as pd

    from clusterhte.data.user import split_list

    path = Path(sheet)
    if not path.exists():
        raise ConfigError(f"config key 'trials.sheet': file {path} not found")
    df = read_sheet(path)
    out: dict[str, dict] = {}
    for i, r in df.iterrows():
        row = {c: (split_list(r.get(c, "")) if c in LIST_COLUMNS else str(r.get(c, "")).strip())
               for c in TRIAL_COLUMNS}
        if not row["methods"]:
            row["methods"] = methods.names(DESIGN_STUDY.get(row["design"], "crt"))
        where = f"{path} line {int(r['_line'])}"
        if row["name"] and not NAME_RE.match(row["name"]):
            raise ConfigError(f"{where}: trial name '{row['name']}' must start with a letter and contain only "
                              "letters, digits, '_' and '-' (it is used in file names)")
        validate_schema(row, SCHEMA_DIR / "trials.schema.yaml", what=where)
        if row["name"] in RESERVED_NAMES:
            raise ConfigError(f"{where}: trial name '{row['name']}' is reserved (built-in datasets and "
                              f"studies: {', '.join(sorted(RESERVED_NAMES))}); choose another name")
        if row["name"] in out:
            raise ConfigError(f"{where}: trial name '{row['name']}' is used twice")
        row["method_overrides"] = tcfg.get("method_overrides") or {}
        lib = str(r.get("larger_is_better", "") or "true").strip().lower()
        if lib not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{where}: larger_is_better must be true or false, got {lib!r}")
        row["larger_is_better"] = lib in ("true", "1", "yes")
        out[row["name"]] = row
    return out


def tassh_status(path: str | Path) -> dict:
    """The record written by the workflow's tassh_fetch step: {"available": bool, "message": str}."""
    import json
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {"available": False, "message": f"{path} unreadable"}


def tassh_available(path: str | Path) -> bool:
    return bool(tassh_status(path).get("available"))


def _numbers(v):
    if isinstance(v, bool):
        return
    if isinstance(v, (int, float)):
        yield v
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from _numbers(x)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _numbers(x)


# hyperparameters whose value is a list of covariate names
COLUMN_LIST_PARAMS = ("interactions", "penalized_moderators")


def check_hyperparameters(method: str, params: dict, trial=None):
    """Build the estimator and run every hyperparameter check that needs no fitting; return it.

    Names and types (:func:`clusterhte.methods.make`), NaN/inf in any numeric value, covariate
    names in list-valued hyperparameters (``interactions``, ``penalized_moderators``) against the
    trial's covariates, and the estimator's own value checks (ranges such as ``n_bootstrap >= 0``)
    when it defines them. Raises :class:`~clusterhte.methods.MethodError`.
    """
    import inspect
    import math

    from clusterhte import methods

    for k, v in params.items():
        if any(not math.isfinite(float(x)) for x in _numbers(v)):
            raise methods.MethodError(f"method '{method}': hyperparameter '{k}' must be a finite "
                                      f"number, got {v!r}")
    est = methods.make(method, params)
    if trial is not None:
        covs = list(trial.covariates)
        for k in COLUMN_LIST_PARAMS:
            v = params.get(k)
            if isinstance(v, (list, tuple)):
                bad = [c for c in v if c not in covs]
                if bad:
                    raise methods.MethodError(f"method '{method}': hyperparameter '{k}' names {bad}, "
                                              f"which are not covariates; covariates are {covs}")
    # the estimator's own checks, where it has them (they are otherwise run at the start of fit)
    for attr in ("_check", "_checked"):
        fn = getattr(est, attr, None)
        if not callable(fn):
            continue
        try:
            n_args = len([p for p in inspect.signature(fn).parameters.values()
                          if p.default is inspect.Parameter.empty])
        except (TypeError, ValueError):
            continue
        try:
            if n_args == 0:
                fn()
            elif n_args == 1 and trial is not None:
                fn(trial)
        except methods.MethodError:
            raise
        except Exception:  # noqa: BLE001 - a check that needs fitted state; fit will run it
            pass
    return est
