# Every target installs what it needs into .venv first (pinned by requirements/constraints.txt).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install serve test lint bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements/constraints.txt requirements/dev.in modelhub_sdk/pyproject.toml service/pyproject.toml
	$(PIP) install --quiet -c requirements/constraints.txt -r requirements/dev.in -e modelhub_sdk -e service
	touch $@

install: $(STAMP)  ## create .venv and install both packages (editable) with pinned dependencies

serve: install  ## build the model on first run, then serve it on 127.0.0.1:8080
	$(BIN)/pharmacy-serve

test: install  ## run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install  ## ruff (lint + format check) and mypy --strict on both packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install  ## run the benchmarks; results go to bench/results/
	$(BIN)/python bench/executor_overhead.py
	$(BIN)/python bench/sdk_compat.py
	$(BIN)/python bench/serving.py  # needs wrk (apt-get install -y wrk)

lock:  ## re-resolve requirements/constraints.txt from scratch
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -r requirements/dev.in -e modelhub_sdk -e service
	.venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^-e ' > requirements/constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
