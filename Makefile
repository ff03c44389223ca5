# The two commands: `make demo` and `make test`. Each creates .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-postgres lint typecheck pytest bench clean image test-docker browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/tds demo

# The web console's tests (tests/console) drive Debian's chromium; `make test` installs it when it is missing
# (root and apt-get; nothing runs when it is there). When it cannot, it says why in one line and those tests
# fail with the same reason. TDS_SKIP_BROWSER=1 skips them on purpose (a machine without a browser).
CHROMIUM := /usr/bin/chromium
browser:
	@if [ "$$TDS_SKIP_BROWSER" = 1 ] || [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make test: $(CHROMIUM) is missing and cannot be installed here (apt-get install chromium needs root and apt-get): the console browser tests will fail (TDS_SKIP_BROWSER=1 skips them)" >&2; \
	  exit 0; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
	  || echo "make test: apt-get could not install chromium (reason above): the console browser tests will fail (TDS_SKIP_BROWSER=1 skips them)" >&2

test: $(VENV)/.installed-test browser
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q

# The same suite with every node's store on PostgreSQL (a schema per node, dropped afterwards).
TDS_TEST_POSTGRES_DSN ?= postgresql://postgres@127.0.0.1:5432/test
test-postgres: $(VENV)/.installed-test browser
	TDS_STORE=$(TDS_TEST_POSTGRES_DSN) $(BIN)/pytest -q

# The container image: wheels built on this machine (pip honours PIP_INDEX_URL), then the image from them.
# TDS_BASE_IMAGE picks the base image (default tds-base:bookworm); README, "docker compose".
TDS_BASE_IMAGE ?= tds-base:bookworm
image: $(BIN)/python
	$(BIN)/python -m pip wheel --quiet -w deploy/wheelhouse . "setuptools>=77" \
	  || { echo "make image: pip wheel failed: the index ($${PIP_INDEX_URL:-PyPI}) cannot be reached or lacks a dependency" >&2; exit 1; }
	docker build -q -f deploy/Dockerfile --build-arg BASE_IMAGE=$(TDS_BASE_IMAGE) -t tds-connector:dev . >/dev/null \
	  || { echo "make image: docker build failed (base image $(TDS_BASE_IMAGE); reason above)" >&2; exit 1; }
	@echo "tds-connector:dev built from $(TDS_BASE_IMAGE)"

# The compose data space in a private Docker engine, end to end (root; not part of `make test`).
test-docker: $(VENV)/.installed
	COMPOSE_PROJECT_NAME=tds deploy/test-docker.sh

$(VENV)/.installed-bench: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(VENV)/.installed $@

# Every benchmark (each within its 2 minutes), then benchmarks/REPORT.md and the chart benchmarks/report.png.
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
