# The two commands of the README: `make run` and `make test`. Both set up .venv when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test setup peers lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# Debian peers of the end-to-end tests (curl, tftp-hpa, busybox, openssl, ...): installed
# when missing and we are root, as in CI; elsewhere those tests skip and name the package.
peers:
	@sh scripts/install-peers.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: setup peers lint
	$(BIN)/python -m pytest

run: setup
	@sh scripts/run.sh

bench: setup
	$(BIN)/python bench/bench.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
