# Turnstile's two entry points: `make demo` (run the server on the built-in simulator) and `make test`
# (everything CI checks). Both create .venv themselves on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit bench clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,claude]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/turnstile serve

lint: $(STAMP)
	$(BIN)/ruff check engine adapters tests bench
	$(BIN)/ruff format --check engine adapters tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict engine adapters

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,claude,bench]'
	$(BIN)/python bench/run_all.py --write-docs docs/performance.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
