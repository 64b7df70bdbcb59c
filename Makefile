# `make demo` serves the seeded site; `make test` runs the whole suite.
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/gate demo

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not browser and not slow"

bench: $(STAMP)
	$(BIN)/python -m gate.bench

screenshots: $(STAMP)
	$(BIN)/python -m tests.screenshots docs/screenshots

clean:
	rm -rf $(VENV) instance build dist .pytest_cache .hypothesis
