# Turnstile's two entry points: `make demo` (run the server on the built-in simulator) and `make test`
# (everything CI checks). Both create .venv themselves on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit bench clean docs clis vendor-console

SERVE_STAMP := $(VENV)/.serve-stamp
# setuptools notes on every editable install that a folder named like the package may shadow it; here
# that folder (turnstile/) *is* the package, so the ten-line notice says nothing: leave it out.
PIP_INSTALL := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet

# What serving needs (the demo): Turnstile and its runtime dependencies, nothing for tests.
$(SERVE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e .
	touch $(SERVE_STAMP)

# Everything the tests need: the test tools, the real Claude Code CLI (bundled in the SDK's wheel) and the
# Redis client (the shared-log tests run against Debian's redis-server).
$(STAMP): $(SERVE_STAMP)
	$(PIP_INSTALL) -e '.[test,claude,redis]'
	touch $(STAMP)

demo: $(SERVE_STAMP)
	$(BIN)/turnstile serve

lint: $(STAMP)
	$(BIN)/ruff check engine adapters turnstile tests bench
	$(BIN)/ruff format --check engine adapters turnstile tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy --strict -p turnstile

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

# The Claude Code CLI versions of the compatibility matrix (docs/compatibility.md), fetched from the npm
# registry into ~/.cache/turnstile/cli. Never fails: a version that cannot be fetched is skipped by the tests.
clis: $(STAMP)
	$(BIN)/python -m tests.compat.versions

bench: $(STAMP)
	$(PIP_INSTALL) -e '.[test,claude,redis,bench]'
	$(BIN)/python bench/run_all.py --write-docs docs/performance.md

# The console's browser libraries (marked, DOMPurify, highlight.js), copied from the exact versions pinned in
# tools/console-vendor/package-lock.json into adapters/console/vendor/ with their licences. Needs npm;
# users of the console never do.
vendor-console:
	cd tools/console-vendor && npm ci --no-audit --no-fund && npm run vendor

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
