# Two commands: `make up` runs webtier on the embedded SQLite store; `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The balancer's hot path, compiled with mypyc into extension modules beside the sources (setup.py
# lists them) and its C head scanners; rebuilt whenever a balancer source changes. The shared library
# stands for all of them.
EXT     := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
COMPILED = src/webtier_native__mypyc$(EXT)

.PHONY: up test lint typecheck pytest bootstrap system-deps compile bench clean

up: $(STAMP) compile
	$(BIN)/webtier up

test: bootstrap lint typecheck pytest

bootstrap: system-deps $(STAMP) compile

compile: $(STAMP)
	@PYTHON=$(PYTHON) scripts/system-deps.sh --build
	@$(MAKE) --no-print-directory $(COMPILED)

$(COMPILED): setup.py $(wildcard src/webtier/balancer/*.py) src/webtier/balancer/_wire.c
	@echo "compiling the balancer's hot path with mypyc"
	@WEBTIER_COMPILE=1 $(BIN)/python setup.py -q build_ext --inplace >$(VENV)/compile.log 2>&1 || { \
		cat $(VENV)/compile.log; \
		echo "error: compiling with mypyc failed: it needs a C compiler (gcc) and Python's headers"; exit 1; }
	@touch src/*$(EXT) src/webtier/balancer/*$(EXT)  # setuptools leaves unchanged module stubs untouched

system-deps:
	@PYTHON=$(PYTHON) scripts/system-deps.sh

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: webtier needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); \
		else echo "error: '$(PYTHON) -m venv' failed: install the python3-venv package"; exit 1; fi; }
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=69"
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) compile
	$(BIN)/pytest

bench: bootstrap compile
	@scripts/system-deps.sh wrk haproxy nginx
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/sessions.py
	$(BIN)/python bench/balancer.py
	$(BIN)/python bench/autoscale.py

clean:
	rm -rf $(VENV) .webtier .pytest_cache .mypy_cache .ruff_cache build
	rm -f src/*.so src/webtier/balancer/*.so
