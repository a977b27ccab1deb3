# The two commands of the README: `make run` and `make test`. Both set up .venv when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

PIP    := $(BIN)/python -m pip -q --disable-pip-version-check
# Wheels of gitprov's runtime dependencies (and of setuptools, to build gitprov): the
# pre-commit test installs the hook from a clone of this repository with no index.
WHEELS := $(VENV)/wheelhouse

.PHONY: run test setup peers node-tools lint bench lock fuzz clean

# Dependencies come from the hashed lock, so CI and every developer test the same
# versions; gitprov itself is installed editable on top.
$(STAMP): pyproject.toml requirements-dev.lock requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing the locked dependencies (requirements-dev.lock) into $(VENV)"
	$(PIP) install --require-hashes -r requirements-dev.lock
	$(PIP) install --no-deps -e .
	@echo "setup: collecting wheels of the runtime dependencies into $(WHEELS)"
	$(PIP) download --require-hashes -r requirements.lock -d $(WHEELS)
	$(PIP) download 'setuptools>=77' -d $(WHEELS)
	@touch $(STAMP)

# gitprov is installed editable: without this, where PYTHONDONTWRITEBYTECODE is set (CI
# images set it) every gitprov process compiles the whole package again (~0.35 s each).
# compileall writes the bytecode whatever that variable says, and only what is stale.
setup: $(STAMP)
	@$(BIN)/python -m compileall -q gitprov

# Refresh both lock files to the newest versions pyproject.toml allows; commit the result.
lock: setup
	$(PIP) install 'pip-tools>=7.4'
	for out in requirements.lock requirements-dev.lock; do \
	  extra=; [ $$out = requirements-dev.lock ] && extra='--extra dev'; \
	  CUSTOM_COMPILE_COMMAND='make lock' $(BIN)/pip-compile -q --upgrade --generate-hashes \
	    --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links $$extra \
	    --output-file $$out pyproject.toml || exit 1; \
	done

# Debian peers of the end-to-end tests (curl, tftp-hpa, busybox, openssl, ...): installed
# when missing and we are root, as in CI; elsewhere those tests skip and name the package.
peers:
	@sh scripts/install-peers.sh

# yaml-language-server for the editor tests, from scripts/node-tools' lock (needs npm,
# which `peers` installs as root).
node-tools:
	@sh scripts/install-node-tools.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup peers node-tools lint
	$(BIN)/python -m pytest

run: setup
	@sh scripts/run.sh

bench: setup
	$(BIN)/python bench/bench.py

# atheris fuzzing of the YAML reader and the Profile Rule parser (not in CI; needs atheris).
fuzz: setup
	$(BIN)/python fuzz/fuzz_yaml.py -max_total_time=60
	$(BIN)/python fuzz/fuzz_rule_url.py -max_total_time=60

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
