# Two commands for a fresh machine with Python 3.11+:
#   make serve   set up .venv and run a server with the embedded in-memory broker
#   make test    set up .venv and run lint, type checks and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 7447
HOST   ?= 127.0.0.1
export HYPOTHESIS_PROFILE ?= ci

.PHONY: serve test lint typecheck pytest fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Editable installs. setuptools reports how it maps this package-dir layout (a meta path
# finder) as a UserWarning banner on every editable install: information, not a problem,
# so the build backend runs with that category ignored.
PIP_INSTALL := PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet -e

# `make serve` needs the runtime dependencies only; `make test` adds the test and dev tools.
$(VENV)/.installed-runtime: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) .
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) '.[dev]'
	touch $@ $(VENV)/.installed-runtime

serve: $(VENV)/.installed-runtime
	$(BIN)/pushwire serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed lint typecheck pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# pushwire is a namespace package mapped from three top-level folders; mypy is given the
# same mapping through a tree of links so it checks the import names users see.
typecheck: $(VENV)/.installed
	rm -rf build/typecheck && mkdir -p build/typecheck/pushwire
	ln -s ../../../protocol build/typecheck/pushwire/protocol
	ln -s ../../../server build/typecheck/pushwire/server
	ln -s ../../../client build/typecheck/pushwire/client
	cd build/typecheck && MYPYPATH=. ../../$(BIN)/mypy --config-file ../../pyproject.toml \
		-p pushwire.protocol -p pushwire.server -p pushwire.client

# Branch coverage: the whole-suite figure per file is printed after the tests.
pytest: $(VENV)/.installed
	$(BIN)/coverage run $(BIN)/pytest
	$(BIN)/coverage report

# Long hypothesis run of the protocol property tests (not part of `make test`).
fuzz: $(VENV)/.installed
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/protocol

clean:
	rm -rf $(VENV) build dist .pytest_cache .hypothesis .mypy_cache .ruff_cache .coverage
