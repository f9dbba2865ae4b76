# `make demo` runs the whole pipeline on the sandbox; `make test` runs lint, types and tests.
# Both build .venv themselves: with uv if it is on PATH, else a plain venv that gets uv (or pip) inside it.
# Installs compile every module to bytecode once: without it, an environment with PYTHONDONTWRITEBYTECODE
# set compiles Airflow from source in every process (the suite starts dozens: workers, servers, the CLI).
# Outside .venv, `make test` installs one thing when it is missing: Debian's `redis-server` (the tests start a
# real Redis for the shared request budget), with apt-get, as root or through sudo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv redis-server test lint typecheck pytest demo bench clean

help:
	@echo "make demo   - backfill -> daily -> report over REST, then daily over OpenD, on the local sandbox"
	@echo "make test   - ruff, mypy and pytest (builds .venv first)"
	@echo "make bench  - benchmarks (docs/BENCHMARKS.md)"

$(STAMP): pyproject.toml
	@echo "building $(VENV) (the first time takes a minute or two)..."
	@set -e; \
	if command -v uv >/dev/null 2>&1; then \
	  [ -x $(BIN)/python ] || uv venv --quiet --python $(PYTHON) $(VENV); \
	  VIRTUAL_ENV=$(VENV) uv pip install --quiet --compile-bytecode -e '.[dev]'; \
	else \
	  [ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV); \
	  if $(BIN)/python -m pip install --quiet uv; then \
	    VIRTUAL_ENV=$(VENV) $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'; \
	  else \
	    $(BIN)/python -m pip install --quiet --upgrade pip; \
	    $(BIN)/python -m pip install --quiet -e '.[dev]'; \
	  fi; \
	fi
	@touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing Debian's redis-server (the tests start a real Redis on 127.0.0.1)..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null; \
	}

# Three workers on two cores: much of the suite waits on sockets, servers and subprocesses. A test file
# stays on one worker (its module fixtures are built once); the longest files start first (tests/conftest.py).
PYTEST_WORKERS ?= 3

pytest: venv redis-server
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# ruff and mypy run beside pytest (-j): much of the suite waits on sockets, servers and subprocesses.
test: venv redis-server
	@$(MAKE) --no-print-directory -j3 lint typecheck pytest

demo: venv
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache
