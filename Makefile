# The two entry points a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint mutation install bench clean

# A venv that could not be made is removed again, so that the next run tries afresh.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }
	$(BIN)/pip install --quiet --upgrade pip

# What each target needs, installed once and again only when pyproject.toml changes (a
# stamp in the venv); pip's output is kept in $(VENV)/pip.log and shown if it fails.
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test
LINT_STAMP := $(VENV)/.installed-lint
MUTATION_STAMP := $(VENV)/.installed-mutation
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

$(LINT_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing ruff and mypy into $(VENV) (again only when pyproject.toml changes)"
	@$(BIN)/pip install --quiet -e '.[test,uvloop,lint]' >$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	@touch $@ $(TEST_STAMP) $(RUNTIME_STAMP)

$(MUTATION_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing mutmut into $(VENV) (again only when pyproject.toml changes)"
	@$(BIN)/pip install --quiet -e '.[test,uvloop,mutation]' >$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	@touch $@ $(TEST_STAMP) $(RUNTIME_STAMP)

install: $(TEST_STAMP)

## Start the gateway in front of the built-in IMS emulator (no cloud account needed); Ctrl-C stops it at once.
run: $(RUNTIME_STAMP)
	$(BIN)/ims-gateway serve --config config/gateway.toml

## Run every test suite, the end-to-end ones included (installs, as root, the Debian
## packages they drive when missing: .ci/system-packages).
test: install
	@.ci/system-packages
	$(BIN)/pytest

## The inner loop: every test but the end-to-end and slow ones, on every core: under a minute (docs/testing.md).
test-fast: install
	$(BIN)/pytest -q -m "not e2e and not slow" -p no:cacheprovider -n auto

## ruff and mypy, as CI runs them.
lint: $(LINT_STAMP)
	$(BIN)/ruff check gateway ims_emulator tests testing benchmarks
	$(BIN)/mypy

## Mutation testing of the pure PATCH domain and the header hygiene (by hand, not in CI; minutes).
## MUTATION_CHILDREN=2 runs two mutants at a time; the score and every survivor: docs/testing.md.
MUTATION_CHILDREN ?= 1
mutation: $(MUTATION_STAMP)
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(MUTATION_CHILDREN)
	$(BIN)/python -m testing.mutation_score

## Benchmark against nginx and an aiohttp floor proxy (needs nginx, wrk, curl); tables in bench-results/.
## BENCH_ARGS="--quick" checks the suite in a minute; "--only streaming --big" adds 4 GiB transfers.
bench: install
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis mutants
