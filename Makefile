# Two commands matter: `make run` (the console bot on the default model) and `make test` (the whole suite).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench lint typecheck check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/shira console

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench.run $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check bot core adapters tests bench scripts
	$(VENV)/bin/ruff format --check bot core adapters tests bench scripts

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test
