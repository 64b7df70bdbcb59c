# `make demo` serves the seeded site; `make test` runs the whole suite.
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo pg-demo test test-fast bench bench-quick bench-tables loadtest screenshots clean

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

# Two pytest-xdist workers; tests that start processes share one of them (tests/conftest.py).
TEST_WORKERS ?= 2

test: $(STAMP) $(AXE)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/pytest -m "not browser and not slow"

# Ratios against bare baselines measured in the same run: in-process (test client) and over HTTP
# (wrk when installed) on SQLite and PostgreSQL, each engine against a pooled page on the same engine,
# with CPU per request and latency at 16 and 64 connections; and unlock throughput with 1, 2 and 4
# server processes. PostgreSQL: GATE_TEST_DATABASE_URL or GATE_DATABASE_URL, else a throwaway
# tools/pg-local cluster when the server is installed. `make bench-tables` prints the last HTTP
# run's tables in Markdown, for docs/benchmarks.md. benchmarks.simulate: simulated visits/s on one
# process, the process pool and a 2-worker local Dask cluster, as ratios to one process.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench
	$(BIN)/python -m benchmarks.httpbench
	$(BIN)/python -m benchmarks.scaling
	$(BIN)/python -m benchmarks.simulate

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.bench --quick
	$(BIN)/python -m benchmarks.httpbench --quick
	$(BIN)/python -m benchmarks.scaling --quick
	$(BIN)/python -m benchmarks.simulate --quick

bench-tables: $(STAMP)
	$(BIN)/python -m benchmarks.httpbench --show bench-results/http.json --markdown

loadtest: $(STAMP)
	$(BIN)/gate loadtest --users 200 --spawn-rate 50 --duration 60s

screenshots: $(STAMP) $(AXE)
	$(BIN)/python -m tests.screenshots docs/screenshots

clean:
	rm -rf $(VENV) instance build dist .pytest_cache .hypothesis
