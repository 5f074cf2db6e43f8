# PathRay: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= $(or $(PATHRAY_VENV),$(HOME)/.cache/pathray/venv-py311)
export PATHRAY_VENV := $(VENV)
# The environment may be shared by several checkouts: import this one first, whichever was
# installed last.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
PY := $(VENV)/bin/python

.PHONY: setup setup-ui setup-test demo test lint bench

setup:
	@scripts/setup.sh core >/dev/null

# The demo is opened with `pathray ui`: its slide viewer needs the npm packages too.
setup-ui:
	@scripts/setup.sh ui >/dev/null

setup-test:
	@scripts/setup.sh test >/dev/null

demo: setup-ui
	$(VENV)/bin/pathray demo

test: setup-test
	@scripts/ensure-postgres.sh
	@# A native crash (in a test or at exit) prints every thread's Python stack.
	PYTHONFAULTHANDLER=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m benchmarks.run_all
