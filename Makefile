# The two entry points a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# What each target needs, installed once and again only when pyproject.toml changes (a
# stamp in the venv); pip's output is kept in $(VENV)/pip.log and shown if it fails.
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test
PIP_LOG := $(VENV)/pip.log

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing ims-gateway and its runtime dependencies into $(VENV) (again only when pyproject.toml changes)"
	@$(BIN)/pip install --quiet -e '.[uvloop]' >$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	@touch $@

# The test extras hold the runtime dependencies too.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing ims-gateway with its runtime and test dependencies into $(VENV) (again only when pyproject.toml changes)"
	@$(BIN)/pip install --quiet -e '.[test,uvloop]' >$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	@touch $@ $(RUNTIME_STAMP)

install: $(TEST_STAMP)

## Start the gateway in front of the built-in IMS emulator (no cloud account needed); Ctrl-C stops it at once.
run: $(RUNTIME_STAMP)
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
