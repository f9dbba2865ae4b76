# `make demo` runs the whole pipeline on the sandbox; `make test` runs lint, types and tests.
# Both build .venv themselves: uv if it is there (or installable with pip), plain venv + pip otherwise.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv test lint typecheck pytest demo bench clean

help:
	@echo "make demo   - run backfill -> daily -> report on the local sandbox (no configuration)"
	@echo "make test   - ruff, mypy and pytest (builds .venv first)"
	@echo "make bench  - benchmarks (docs/BENCHMARKS.md)"

$(STAMP): pyproject.toml
	@set -e; \
	if ! command -v uv >/dev/null 2>&1 && ! $(PYTHON) -m uv --version >/dev/null 2>&1; then \
	  $(PYTHON) -m pip install --quiet --user uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv >/dev/null 2>&1 || true; \
	fi; \
	if command -v uv >/dev/null 2>&1; then UV="uv"; \
	elif $(PYTHON) -m uv --version >/dev/null 2>&1; then UV="$(PYTHON) -m uv"; \
	else UV=""; fi; \
	if [ -n "$$UV" ]; then \
	  [ -x $(BIN)/python ] || $$UV venv --quiet --python $(PYTHON) $(VENV); \
	  VIRTUAL_ENV=$(VENV) $$UV pip install --quiet -e '.[dev]'; \
	else \
	  [ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/pip install --quiet --upgrade pip; \
	  $(BIN)/pip install --quiet -e '.[dev]'; \
	fi
	@touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

demo: venv
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache
