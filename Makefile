# `make demo` serves the seeded site; `make test` runs the whole suite.
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo pg-demo test test-fast bench bench-quick loadtest screenshots clean

# axe-core (npm) for the accessibility checks in the browser tests.
AXE    := .axe/node_modules/axe-core/axe.min.js

$(AXE):
	npm install --prefix .axe --no-audit --no-fund --silent axe-core@4

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,docs,bench]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/gate demo

# The demo on a local throwaway PostgreSQL (instance/pg; `tools/pg-local stop instance/pg` stops it).
# A database URL needs a shared secret key: one is made once and kept in instance/pg/secret_key.
pg-demo: $(STAMP)
	@mkdir -p instance/pg
	@test -s instance/pg/secret_key || (umask 077 && $(BIN)/python -c 'import secrets; print(secrets.token_hex(32))' > instance/pg/secret_key)
	GATE_DATABASE_URL=$$(tools/pg-local start instance/pg) GATE_SECRET_KEY=$$(cat instance/pg/secret_key) $(BIN)/gate demo

test: $(STAMP) $(AXE)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not browser and not slow"

# Ratios against bare baselines measured in the same run (wrk is used when installed), and
# unlock throughput with 1, 2 and 4 server processes on SQLite and PostgreSQL (GATE_TEST_DATABASE_URL
# or GATE_DATABASE_URL, else a throwaway tools/pg-local cluster when the server is installed).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench
	$(BIN)/python -m benchmarks.httpbench
	$(BIN)/python -m benchmarks.scaling

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.bench --quick
	$(BIN)/python -m benchmarks.httpbench --quick
	$(BIN)/python -m benchmarks.scaling --quick

loadtest: $(STAMP)
	$(BIN)/gate loadtest --users 200 --spawn-rate 50 --duration 60s

screenshots: $(STAMP) $(AXE)
	$(BIN)/python -m tests.screenshots docs/screenshots

clean:
	rm -rf $(VENV) instance build dist .pytest_cache .hypothesis
