"""Stage functions called by the thin workflow scripts: each takes tables and returns tables.

They hold the glue between the statistics (methods, simulate, evaluate) and the Parquet contracts
of DESIGN.md, so every stage is importable and testable without Snakemake.
"""
