# The two commands of the README: `make demo` (one TravelBuddy turn on the embedded
# defaults) and `make test` (the test suite). Both make their own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install-dev install-local lint bench-steps

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
