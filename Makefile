# The two commands: `make demo` and `make test`. Each creates .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench clean image test-docker

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

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q

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

bench: $(VENV)/.installed
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
