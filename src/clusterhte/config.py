"""Validation of the workflow configuration and the per-method hyperparameters.

Called by the Snakefile at start-up, so a bad configuration stops the workflow before any job
runs, with one message naming the key at fault (e.g. ``otr.replicates``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from clusterhte import methods

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "workflow" / "schemas"


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
    validator = jsonschema.Draft202012Validator(schema)
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
            methods.make(name, method_params(method_cfg, scfg, name))
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
    df = pd.read_csv(path, sep="\t", dtype=str, comment="#").fillna("")
    missing = [c for c in TRIAL_COLUMNS if c not in df.columns and c != "methods"]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing}; expected tab-separated columns {TRIAL_COLUMNS}")
    out: dict[str, dict] = {}
    for i, r in df.iterrows():
        row = {c: (split_list(r.get(c, "")) if c in LIST_COLUMNS else str(r.get(c, "")).strip())
               for c in TRIAL_COLUMNS}
        if not row["methods"]:
            row["methods"] = methods.names(DESIGN_STUDY.get(row["design"], "crt"))
        validate_schema(row, SCHEMA_DIR / "trials.schema.yaml", what=f"{path} row {i + 2}")
        if row["name"] in out or row["name"] in SECTION_STUDY:
            raise ConfigError(f"{path} row {i + 2}: trial name '{row['name']}' is used twice or is reserved")
        row["method_overrides"] = tcfg.get("method_overrides") or {}
        row["larger_is_better"] = str(r.get("larger_is_better", "true")).strip().lower() not in ("false", "0", "no")
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
