# buildplatform: `make run` serves, `make test` tests. Both work on a machine
# with nothing but Python 3.11+: the first call creates .venv and installs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test generate check-generated lint typecheck check bench dist clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml generated/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e generated/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the server, the stubs and the dev tools

run: $(STAMP)  ## migrate and serve (embedded PostgreSQL in ./.data unless DATABASE_URL is set)
	$(PY) -m server --migrate

test: $(STAMP)  ## run the test suite against a real PostgreSQL (embedded unless TEST_DATABASE_URL)
	$(PY) -m pytest $(PYTEST_ARGS)

generate: $(STAMP)  ## regenerate generated/ from protos/
	$(PY) tools/generate.py

check-generated: generate  ## fail when generated/ differs from what protos/ produce
	git diff --exit-code --stat -- generated/ || { echo "generated/ is stale: run 'make generate' and commit"; exit 1; }
	test -z "$$(git status --porcelain -- generated/)" || { git status --porcelain -- generated/; echo "generated/ has untracked files: run 'make generate' and commit"; exit 1; }

lint: $(STAMP)  ## buf lint on the contract, ruff on the code
	$(VENV)/bin/buf lint
	$(VENV)/bin/ruff check server tests tools

typecheck: $(STAMP)  ## mypy --strict on the server
	$(VENV)/bin/mypy

check: lint typecheck check-generated  ## everything CI checks besides the tests

bench: $(STAMP)  ## measure throughput and latency against their floors (see docs/benchmarks.md)
	$(PY) -m bench $(BENCH_ARGS)

clean:  ## remove the virtual environment, the embedded database and build output
	rm -rf $(VENV) .data build dist generated/python/dist
