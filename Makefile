# The two commands of the README: `make demo` (one TravelBuddy turn on the embedded
# defaults) and `make test` (the test suite). Both make their own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install-dev install-local lint install-bench bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'

# [local] compiles llama-cpp-python: about 6 minutes on 2 cores, the first time.
install-local: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'

demo: install-local
	$(BIN)/python -m agent_platform.demo

test: install-dev
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The benchmarks (BENCHMARKS.md) in a virtual environment of their own: the [bench] extra
# brings DBOS, LangGraph, psycopg, gevent and py-spy, which the tests do not need. Every
# benchmark in sequence, about 12 minutes on 2 idle cores; the output goes to
# bench-results.md. BENCH_ARGS=--quick checks that they all run (a few minutes).
BENCH_VENV ?= .venv-bench

$(BENCH_VENV)/bin/python:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip

install-bench: $(BENCH_VENV)/bin/python
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[dev,bench]'

bench: install-bench
	$(BENCH_VENV)/bin/python -m bench.all $(BENCH_ARGS)
