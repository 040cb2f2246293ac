# buildplatform: `make run` serves, `make test` tests. Both work on a machine
# with nothing but Python 3.11+: the first call creates .venv and installs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test test-fast test-quick generate check-generated lint typecheck check bench dist clean help web web-if-node web-typecheck browser-tests-deps network-tests-deps

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# .venv is reused only while its python runs and is the one $(PYTHON) names
# (same installation, same version); otherwise it is made anew.
PYTHON_ID := $(shell $(PYTHON) -c 'import sys; print(sys.base_prefix, sys.version)' 2>/dev/null)
VENV_ID := $(shell $(PY) -c 'import sys, pip; print(sys.base_prefix, sys.version)' 2>/dev/null)
ifneq ($(wildcard $(VENV)),)
ifneq ($(PYTHON_ID),$(VENV_ID))
VENV_STALE := FORCE
endif
endif

$(STAMP): requirements.lock pyproject.toml generated/python/pyproject.toml $(VENV_STALE)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "buildplatform needs Python >= 3.11, and '$(PYTHON)' is $$(command -v $(PYTHON) >/dev/null && $(PYTHON) --version 2>&1 || echo 'not found'): run make PYTHON=/path/to/python3.11 (or newer)"; exit 1; }
	@test -z "$(VENV_STALE)" || { echo "$(VENV) was made by another Python than $(PYTHON), or is broken: making it anew"; rm -rf $(VENV); }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e generated/python -e .
	@$(PY) tools/lock.py check || true
	touch $(STAMP)

.PHONY: FORCE
FORCE:

# Dependencies are locked, with hashes (tools/lock.py): `make` installs exactly
# what requirements.lock (and requirements-generate.lock) pin, and `make check`
# fails when they no longer pin what pyproject.toml declares.
.PHONY: lock check-lock
lock: $(STAMP)  ## resolve requirements.lock and requirements-generate.lock again from pyproject.toml (UPGRADE=1: newest allowed versions)
	$(PY) tools/lock.py write $(if $(UPGRADE),--upgrade)

check-lock: $(STAMP)  ## fail when the lock files do not pin what pyproject.toml declares
	$(PY) tools/lock.py check

check: check-lock

install: $(STAMP)  ## create .venv and install the server, the stubs and the dev tools

run: $(STAMP) web-if-node  ## build the log page (with Node), migrate and serve (embedded PostgreSQL in ./.data unless DATABASE_URL is set)
	$(PY) -m server --migrate

test: $(STAMP) web browser-tests-deps network-tests-deps  ## run the test suite against a real PostgreSQL (embedded unless TEST_DATABASE_URL)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the unit and integration tests (no server process, no browser): seconds, while working
	$(PY) -m pytest tests/unit tests/integration $(PYTEST_ARGS)

test-quick: $(STAMP) web  ## everything but the browser, Prometheus and iptables tests
	$(PY) -m pytest -m "not browser and not prometheus and not iptables" $(PYTEST_ARGS)

# The generator runs in its own environment (it needs protobuf 6, the server
# runs on protobuf 7), from requirements-generate.lock.
GEN_VENV := $(VENV)/generator
$(GEN_VENV)/.installed-stamp: requirements-generate.lock | $(STAMP)
	rm -rf $(GEN_VENV)
	$(PYTHON) -m venv $(GEN_VENV)
	$(GEN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-generate.lock
	touch $@

generate: $(GEN_VENV)/.installed-stamp  ## regenerate generated/ from protos/
	$(GEN_VENV)/bin/python tools/generate.py

check-generated: generate  ## fail when generated/ differs from what protos/ produce
	git diff --exit-code --stat -- generated/ || { echo "generated/ is stale: run 'make generate' and commit"; exit 1; }
	test -z "$$(git status --porcelain -- generated/)" || { git status --porcelain -- generated/; echo "generated/ has untracked files: run 'make generate' and commit"; exit 1; }

lint: $(STAMP)  ## buf lint on the contract, ruff on the code
	$(VENV)/bin/buf lint
	$(VENV)/bin/ruff check server tests tools

typecheck: $(STAMP) web-typecheck  ## mypy --strict on the server, tsc on the log page
	$(VENV)/bin/mypy

check: lint typecheck check-generated breaking check-version  ## everything CI checks besides the tests

# The published clients and their contract (docs/clients.md).
.PHONY: node-modules breaking check-version version accept-break
TS := generated/typescript

node-modules: $(TS)/node_modules/.package-lock.json  ## install the TypeScript generator and compiler from the lock file (npm ci), when missing or stale

$(TS)/node_modules/.package-lock.json: $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund

breaking: $(STAMP)  ## fail when protos/ break the released contract (contracts/released.binpb)
	$(VENV)/bin/buf breaking protos --against contracts/released.binpb || { echo "protos/ break the released contract: undo the change, or record it on purpose with: make accept-break REASON='...' (docs/clients.md)"; exit 1; }

check-version: $(STAMP)  ## every package carries the same version: a release with its CHANGELOG.md section, or X.Y.Z.devN for unreleased work
	$(PY) tools/version.py check

version: $(STAMP)  ## print the version; `make version BUMP=minor` (major, minor, patch, release, X.Y.Z) releases one, BUMP=dev starts the next
	$(PY) tools/version.py $(if $(BUMP),bump $(BUMP),show)

accept-break: $(STAMP)  ## record an intended breaking change: make accept-break REASON='what breaks and why'
	test -n "$(REASON)" || { echo "usage: make accept-break REASON='what breaks and why'"; exit 1; }
	$(PY) tools/version.py accept-break "$(REASON)"

dist: $(STAMP)  ## build the wheel and the sdist into dist/, and the npm tarball where Node and npm are installed
	mkdir -p dist
	$(PY) -m build --outdir dist generated/python
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		set -x; $(MAKE) --no-print-directory node-modules && cd $(TS) && npm pack --pack-destination ../../dist; \
	else echo "node or npm not found: dist/ holds the Python packages only (the npm tarball needs Node 20 and npm)"; fi
	ls -l dist

# The live build log page (docs/log-page.md): web/src bundled by esbuild into
# web/dist, which server/web_assets.py serves. Rebuilt when a source, the lock
# files or the generated client changed.
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/build.mjs web/tsconfig.json $(wildcard $(TS)/src/*.ts $(TS)/src/*/*/*.ts)

web: web/dist/index.html  ## build the live build log page (web/ -> web/dist) with esbuild

web/dist/index.html: $(WEB_SOURCES) web/node_modules/.package-lock.json $(TS)/node_modules/.package-lock.json
	cd web && node build.mjs

# --ignore-scripts: esbuild's binary comes as an optional dependency of its
# own; its postinstall script only checks it (and npm 11 does not run it unasked).
web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund --ignore-scripts

# Without Node the server still serves gRPC; it says in one line how to get the page.
web-if-node:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory web; fi

# The browser tests drive Debian's chromium with playwright-core (tests/e2e/browser.py).
export CHROMIUM ?= /usr/bin/chromium
browser-tests-deps: tests/browser/node_modules/.package-lock.json  ## chromium (apt-get, when root) and playwright-core (npm ci) for the browser tests
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null \
	      && test -x $(CHROMIUM) || { echo "apt-get installed no Chromium at $(CHROMIUM): set CHROMIUM to one"; exit 1; }; \
	  else \
	    echo "the browser tests need Chromium at $(CHROMIUM): run 'sudo apt-get install -y chromium' (or make test CHROMIUM=/path/to/chromium)"; exit 1; \
	  fi; }

network-tests-deps:  ## iptables (apt-get, when root) for the test that makes PostgreSQL vanish (tests/e2e/test_network_faults.py)
	@command -v iptables >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing iptables for the network fault tests (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables >/dev/null 2>&1 \
	      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables >/dev/null; } \
	      || { echo "apt-get could not install iptables: the network fault tests need it"; exit 1; }; \
	  else \
	    echo "the network fault tests drop packets with iptables, as root: run 'sudo apt-get install -y iptables' and make test as root"; exit 1; \
	  fi; }

tests/browser/node_modules/.package-lock.json: tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund --ignore-scripts

web-typecheck: web/node_modules/.package-lock.json $(TS)/node_modules/.package-lock.json
	cd web && node_modules/.bin/tsc -p .

bench: $(STAMP)  ## measure throughput and latency against their floors (see docs/benchmarks.md)
	$(PY) -m bench $(BENCH_ARGS)

# The metrics tests scrape the server with Debian's prometheus (tests/observability.py).
.PHONY: prometheus-tests-deps
export PROMETHEUS ?= /usr/bin/prometheus
test: prometheus-tests-deps
prometheus-tests-deps:  ## Debian's prometheus for the metrics tests (apt-get, when root)
	@test -x $(PROMETHEUS) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's prometheus for the metrics tests (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
	      && test -x $(PROMETHEUS) || { echo "apt-get installed no prometheus at $(PROMETHEUS): set PROMETHEUS to one"; exit 1; }; \
	  else \
	    echo "the metrics tests need Prometheus at $(PROMETHEUS): run 'sudo apt-get install -y --no-install-recommends prometheus' (or make test PROMETHEUS=/path/to/prometheus)"; exit 1; \
	  fi; }

clean:  ## remove the virtual environment, the embedded database and build output
	rm -rf $(VENV) .data build dist generated/python/dist generated/typescript/node_modules generated/typescript/dist web/node_modules web/dist tests/browser/node_modules
