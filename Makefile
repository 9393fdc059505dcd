# The two entry points of README.md. Everything they need is installed from this repo's
# own files: the virtualenv here, the servers of the local stack under ~/.cache/clustertwin.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint install stack-up stack-down bench

# pip's own warnings go to a log (shown if the install fails), so the demo's first words
# on a fresh machine are its own.
$(STAMP): pyproject.toml
	@echo "installing the virtualenv $(VENV) (log: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --upgrade pip > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@$(VENV)/bin/pip install -q -e '.[dev]' >> $(VENV)/install.log 2>&1 || (tail -60 $(VENV)/install.log; exit 1)
	@touch $(STAMP)

install: $(STAMP)

## The live demo: local stack + the simulated Dunkirk cluster, end to end (Ctrl-C stops it).
demo: install
	$(VENV)/bin/clustertwin demo

## Lint, type-check, then every test against the real local stack. A first run builds the
## stack before the first test (tests/conftest.py): InfluxDB 2.7, the default, takes 7-16 min
## cold on 2 cores; `CLUSTERTWIN_INFLUXDB_VERSION=1.8.10 make test` runs against 1.8.
test: lint
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

stack-up: install
	$(VENV)/bin/clustertwin stack up

stack-down: install
	$(VENV)/bin/clustertwin stack down
