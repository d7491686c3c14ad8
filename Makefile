# Two commands on a fresh machine:  make run   and   make test
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
SHARED ?= ../shared

.PHONY: run test test-slow test-slurm report bench clean venv

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

CONFIG ?= config/config.yaml

# Resumes after any interruption (stale lock removed, interrupted jobs rerun) and finishes every
# study it can (--keep-going); see clusterhte.smk.run_workflow.
run: $(STAMP)
	$(BIN)/python -m clusterhte.smk run --cores $(CORES) --configfile $(CONFIG) --config shared_dir=$(SHARED)

report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml --config shared_dir=$(SHARED) --report results/report.html

# The suite runs on $(CORES) worker processes, a test file per worker at a time (module fixtures
# such as the report workflow are built once).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(CORES) --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -s -m slow -p no:xdist

test-slurm: $(STAMP)
	$(BIN)/python -m pytest -q -m slurm -s

bench: $(STAMP)
	$(BIN)/python benchmarks/otr_replicate.py

clean:
	rm -rf results .snakemake
