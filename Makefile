# Two commands do everything on a fresh machine: `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The interpreter of the venv (scripts/pick-python.sh says why the distribution's comes first); POSTROOM_PYTHON
# names another. A venv made from a different one is made again.
PYTHON := $(shell bash scripts/pick-python.sh)
ifneq ($(PYTHON),)
ifneq ($(wildcard $(VENV)/bin/python),)
ifneq ($(shell $(VENV)/bin/python -c 'import os, sys; print(os.path.realpath(sys.executable))' 2>/dev/null),$(PYTHON))
$(info venv: $(VENV) was made from another interpreter; making it again from $(PYTHON))
$(shell rm -rf $(VENV))
endif
endif
endif
BIN := $(VENV)/bin
# System programs the tests drive: command=Debian package.
TEST_TOOLS := fetchmail=fetchmail mpop=mpop postfix=postfix promtool=prometheus prometheus=prometheus docker-compose=docker-compose redis-cli=redis-tools prometheus-redis-exporter=prometheus-redis-exporter rspamd=rspamd dovecot=dovecot-core /usr/lib/dovecot/pop3=dovecot-pop3d /usr/lib/dovecot/lmtp=dovecot-lmtpd pebble=pebble

.PHONY: run test venv services test-tools lint typecheck unit clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)"
	@bash scripts/ensure-services.sh python $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@bash scripts/native-argon2.sh $(BIN)
	@touch $@

venv: $(VENV)/.installed

services:
	@bash scripts/ensure-services.sh

test-tools:
	@bash scripts/ensure-services.sh tools $(TEST_TOOLS)

run: venv services
	@bash scripts/run-demo.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

test: venv services test-tools lint typecheck
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .run
