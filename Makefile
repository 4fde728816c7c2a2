# The two entry points a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast mutation install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,uvloop]'

# Installed once per pyproject.toml: the inner-loop targets below do not reinstall each time.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,uvloop]'
	touch $@

## Start the gateway in front of the built-in IMS emulator (no cloud account needed).
run: install
	$(BIN)/ims-gateway serve --config config/gateway.toml

## Run every test suite, the end-to-end ones included.
test: install
	$(BIN)/pytest

$(BIN)/mutmut: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,uvloop,mutation]'
	touch $@

## The inner loop: every test but the end-to-end and slow ones, in under a minute (docs/testing.md).
test-fast: $(VENV)/.installed
	$(BIN)/pytest -q -m "not e2e and not slow" -p no:cacheprovider

## Mutation testing of the pure PATCH domain and the header hygiene (by hand, not in CI; minutes).
## MUTATION_CHILDREN=2 runs two mutants at a time; the score and every survivor: docs/testing.md.
MUTATION_CHILDREN ?= 1
mutation: $(BIN)/mutmut
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(MUTATION_CHILDREN)
	$(BIN)/python -m testing.mutation_score

## Benchmark against nginx and an aiohttp floor proxy (needs nginx, wrk, curl); tables in bench-results/.
## BENCH_ARGS="--quick" checks the suite in a minute; "--only streaming --big" adds 4 GiB transfers.
bench: install
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis mutants
