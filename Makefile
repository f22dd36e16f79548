# pairshift: the two commands are `make demo` and `make test`; both build .venv from pyproject.toml first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: venv test demo bench docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/pairshift demo $(DEMO_ARGS)

bench: venv
	$(PY) bench/run.py

docs: venv
	$(PY) -m pairshift.docs > docs/configuration.md

clean:
	rm -rf $(VENV) .pairshift .pytest_cache
