# pairshift: the commands are `make demo`, `make test` and `make lint`; each builds .venv from pyproject.toml first.
# `make test-fast` is the quick lane while working: every test but the end-to-end ones (marker `e2e`).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: venv test test-fast test-e2e lint demo bench docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: venv
	$(VENV)/bin/pytest -m "not e2e" $(PYTEST_ARGS)

test-e2e: venv
	$(VENV)/bin/pytest -m e2e $(PYTEST_ARGS)

# ruff's rules and line length are in pyproject.toml; `ruff format` fixes what `--check` reports.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: venv
	$(VENV)/bin/pairshift demo $(DEMO_ARGS)

bench: venv
	$(PY) bench/run.py

docs: venv
	$(PY) -m pairshift.docs > docs/configuration.md

clean:
	rm -rf $(VENV) .pairshift .pytest_cache
