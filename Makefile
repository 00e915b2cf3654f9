# ztbridge — the two commands: `make up` and `make test`.
# Everything a fresh Debian machine lacks is installed here, idempotently.

SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: up test install install-test system-deps npm-deps viewer lint typecheck unit bench clean help contracts

help:
	@echo "make up    - install and start ztbridge on embedded defaults"
	@echo "make test  - install test dependencies and run lint, type checks and every test"
	@echo "make bench - run the ingest and anchoring benchmarks (installs Orthanc and anvil)"
	@echo "make contracts - rebuild the smart contract artifacts with the pinned solc"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[server]'
	touch $@

$(VENV)/.test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[server,test]'
	touch $(VENV)/.runtime $@

# The OHIF viewer the portal serves at /viewer: @ohif/app's built dist/, pinned by its
# package-lock (the package alone: its dependencies are what dist/ was built from), never
# rebuilt; --ignore-scripts, so no install script fetches anything.
VIEWER_DIST := portal/viewer/node_modules/@ohif/app/dist/index.html
$(VIEWER_DIST): portal/viewer/package.json portal/viewer/package-lock.json
	npm ci --prefix portal/viewer --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@
viewer: $(VIEWER_DIST)

install: $(VENV)/.runtime $(VIEWER_DIST)
install-test: $(VENV)/.test $(VIEWER_DIST)

# Debian packages: DCMTK is the modality, PostgreSQL the external index in the tests, the
# openssl command makes throwaway certificates, signs test JWTs and cross-checks signatures,
# chromium is the browser the portal's Playwright story test drives.
# apt-get update runs once, and only when something is missing.
system-deps:
	@missing=""; \
	command -v storescu >/dev/null && command -v echoscu >/dev/null || missing="$$missing dcmtk"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v runuser >/dev/null || missing="$$missing util-linux"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v Orthanc >/dev/null || missing="$$missing orthanc"; \
	ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || missing="$$missing orthanc-dicomweb"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

tests/js/node_modules/.package-lock.json: tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund --loglevel=error

contracts/node_modules/.package-lock.json: contracts/package.json contracts/package-lock.json
	npm ci --prefix contracts --no-audit --no-fund --loglevel=error

tests/ledger/anvil/node_modules/.package-lock.json: tests/ledger/anvil/package.json tests/ledger/anvil/package-lock.json
	npm ci --prefix tests/ledger/anvil --no-audit --no-fund --loglevel=error

npm-deps: tests/js/node_modules/.package-lock.json contracts/node_modules/.package-lock.json \
	tests/ledger/anvil/node_modules/.package-lock.json

# Rebuild the committed contract artifacts (contracts/build/*.json) from source.
contracts: contracts/node_modules/.package-lock.json
	node contracts/build.mjs

up: install
	$(BIN)/ztbridge up

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-test
	$(BIN)/mypy

test: install-test system-deps npm-deps lint typecheck
	$(BIN)/pytest

bench: install-test system-deps tests/ledger/anvil/node_modules/.package-lock.json
	@command -v Orthanc >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends orthanc; }
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/anchor.py

clean:
	rm -rf $(VENV) portal/viewer/node_modules tests/js/node_modules contracts/node_modules tests/ledger/anvil/node_modules .mypy_cache .ruff_cache .pytest_cache
