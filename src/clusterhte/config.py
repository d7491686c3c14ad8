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
    return params


def validate_methods(cfg: dict, method_cfg: dict, study: str) -> None:
    """Every listed method exists, fits the study, and its hyperparameters are valid."""
    scfg = cfg[study]
    for i, name in enumerate(scfg.get("methods", [])):
        key = f"{study}.methods[{i}]"
        if name not in methods.REGISTRY:
            raise ConfigError(f"config key '{key}': unknown method {name!r}; known {study} methods: "
                              f"{', '.join(methods.names(study))}")
        if methods.REGISTRY[name].study != study:
            raise ConfigError(f"config key '{key}': method {name!r} belongs to the "
                              f"'{methods.REGISTRY[name].study}' study, not '{study}'")
    for name in (scfg.get("method_overrides") or {}):
        if name not in methods.REGISTRY:
            raise ConfigError(f"config key '{study}.method_overrides.{name}': unknown method {name!r}")
    for name in scfg.get("methods", []):
        try:
            methods.make(name, method_params(method_cfg, scfg, name))
        except methods.MethodError as e:
            raise ConfigError(f"config key 'methods.yaml:{name}' (or '{study}.method_overrides.{name}'): {e}") from None


def validate(cfg: dict, method_cfg: dict, schema_path: str | Path | None = None) -> None:
    """Validate the run config and the method hyperparameters; raise one ConfigError."""
    validate_schema(cfg, schema_path or SCHEMA_DIR / "config.schema.yaml")
    for name in method_cfg:
        if name not in methods.REGISTRY:
            raise ConfigError(f"methods.yaml key '{name}': unknown method; known: {', '.join(methods.REGISTRY)}")
    for study in ("otr", "crt"):
        if study in cfg:
            validate_methods(cfg, method_cfg, study)
