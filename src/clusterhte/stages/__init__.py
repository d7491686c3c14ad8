"""Stage functions called by the thin workflow scripts: each takes tables and returns tables.

They hold the glue between the statistics (methods, simulate, evaluate) and the Parquet contracts
of DESIGN.md, so every stage is importable and testable without Snakemake.
"""

import importlib


def study(name: str):
    """The stage module of a simulation study ("otr" or "crt")."""
    if name not in ("otr", "crt"):
        raise ValueError(f"unknown simulation study {name!r}; expected 'otr' or 'crt'")
    return importlib.import_module(f"clusterhte.stages.{name}")
