# pairshift: the commands are `make demo`, `make test` and `make lint`; each builds .venv from pyproject.toml first.
# `make test-fast` is the quick lane while working: every test but the end-to-end ones (marker `e2e`), spread
# over TEST_WORKERS processes by pytest-xdist. `make test` runs that lane the same way, then the e2e tests one at
# a time in one process (they start real servers and processes and time them, so they do not share the CPU with
# each other); it fails when either part fails. TEST_WORKERS=0 runs the fast lane in one process too. The fast lane
# uses --dist worksteal: a worker that runs out of tests takes pending ones from another, so the lane does not
# end on one worker still working through its share of the slow migration tests.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Three processes on two cores: the fast lane waits on the Temporal test server, PostgreSQL and fake providers
# ~28% of the time with two (72% CPU use; 108-113 s), and a third fills it (88-92 s; four: 90-94 s).
TEST_WORKERS ?= 3
# Test runs keep Python's compiled bytecode (outside the tree, under .venv/pycache) even where the environment
# sets PYTHONDONTWRITEBYTECODE: without it every process of every run recompiled pairshift and re-rewrote the
# test modules (collection 15-16 s of CPU per process, 9 s with the cache), and the Temporal sandbox
# recompiled each workflow module at every workflow run.
PYTEST := env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(abspath $(VENV))/pycache $(VENV)/bin/pytest

.PHONY: venv test test-fast test-e2e lint demo bench docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# pytest exits 5 when a part selects no test (PYTEST_ARGS naming one file): that part did not fail.
test: venv
	$(PYTEST) -m "not e2e" -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); fast=$$?; \
	$(PYTEST) -m e2e $(PYTEST_ARGS); e2e=$$?; \
	if [ $$fast = 5 ] && [ $$e2e = 5 ]; then exit 5; fi; \
	for s in $$fast $$e2e; do if [ $$s != 0 ] && [ $$s != 5 ]; then exit $$s; fi; done

test-fast: venv
	$(PYTEST) -m "not e2e" -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-e2e: venv
	$(PYTEST) -m e2e $(PYTEST_ARGS)

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
