# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and are re-runnable.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1
DATA_DIR := $(if $(EMBEDSTACK_DATA_DIR),$(EMBEDSTACK_DATA_DIR),$(wildcard ../shared/data))
EXTRAS_TEST := dev,fast,ml,torch,onnx,index,serve,bench,demo
EXTRAS_DEMO := fast,ml,torch,index,demo

.PHONY: demo test lint bench clean peers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -e ".[$(EXTRAS_DEMO)]"
	touch $@

$(VENV)/.test-installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -e ".[$(EXTRAS_TEST)]"
	touch $@ $(VENV)/.demo-installed

# Every era on SciFact + STS-B (quick: bounded work, labelled under the table); the table goes to stdout,
# progress to stderr, and the quality-vs-cost plot's path is printed. A second run reads the cached vectors.
demo: $(VENV)/.demo-installed
	EMBEDSTACK_DATA_DIR=$(DATA_DIR) $(BIN)/embedstack ladder --quick

test: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks
	EMBEDSTACK_DATA_DIR=$(DATA_DIR) $(BIN)/python -m pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/embedstack

# Peers whose pins clash with ours live in their own virtualenvs: PyLate 1.6 (its fast-plaid pins torch <= 2.11,
# so it is installed without fast-plaid, on our torch; Stanford PLAID (use_fast=False) builds its C++ kernels
# with ninja on first use). The PyLate interop test and benchmarks use .venv-pylate.
peers: $(VENV)/.test-installed
	test -x .venv-pylate/bin/python || $(PYTHON) -m venv .venv-pylate
	.venv-pylate/bin/pip install -q torch==2.13.0 "sentence-transformers==5.3.0" "transformers<=5.3.0,>=4.41.0" \
		"datasets>=2.20.0" "accelerate>=0.31.0" "pandas>=2.2.1" "ujson==5.12.0" "fastkmeans==0.5.0" voyager \
		"ninja==1.11.1.4"
	.venv-pylate/bin/pip install -q --no-deps pylate==1.6.0
	.venv-pylate/bin/pip install -q -e ".[fast,torch,index]"

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
