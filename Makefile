# Two commands: `make up` runs webtier on the embedded SQLite store; `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint typecheck pytest bootstrap system-deps bench clean

up: $(STAMP)
	$(BIN)/webtier up

test: bootstrap lint typecheck pytest

bootstrap: system-deps $(STAMP)

system-deps:
	@scripts/system-deps.sh

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: webtier needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); \
		else echo "error: '$(PYTHON) -m venv' failed: install the python3-venv package"; exit 1; fi; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

bench: bootstrap
	@scripts/system-deps.sh wrk haproxy nginx
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/sessions.py
	$(BIN)/python bench/balancer.py
	$(BIN)/python bench/autoscale.py

clean:
	rm -rf $(VENV) .webtier .pytest_cache .mypy_cache .ruff_cache
