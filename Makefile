# The two Quick start commands: `make up` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
# pip warns about every missing mirror folder of this machine's index; keep errors only.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install up test lint typecheck unit services bench clean

# torch==2.13.0 (CPU) goes in first: otherwise pip resolves sentence-transformers' torch
# requirement to a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0 $(QUIET_PIP)
	$(BIN)/pip install --quiet -e '.[dev]' $(QUIET_PIP)
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/devmesh up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q tests/unit

services:
	bash deploy/test-services.sh

test: lint typecheck services
	$(BIN)/pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python bench/store.py
	$(BIN)/python bench/ingest_http.py
	$(BIN)/python bench/query.py
	$(BIN)/python bench/parsing.py --data ../shared/data/loghub-2k
	$(BIN)/python bench/vectors.py
	$(BIN)/python bench/graph.py
	$(BIN)/python bench/syslog_udp.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
