# The two entry points a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,uvloop]'

## Start the gateway in front of the built-in IMS emulator (no cloud account needed).
run: install
	$(BIN)/ims-gateway serve --config config/gateway.toml

## Run every test suite, the end-to-end ones included.
test: install
	$(BIN)/pytest

## Benchmark against nginx and an aiohttp floor proxy (needs nginx, wrk, curl); tables in bench-results/.
## BENCH_ARGS="--quick" checks the suite in a minute; "--only streaming --big" adds 4 GiB transfers.
bench: install
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
