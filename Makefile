# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and are re-runnable.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1
DATA_DIR := $(if $(EMBEDSTACK_DATA_DIR),$(EMBEDSTACK_DATA_DIR),$(wildcard ../shared/data))
EXTRAS_TEST := dev,fast,ml,torch,onnx,index,serve,bench,demo,scale
EXTRAS_DEMO := fast,ml,torch,index,demo

.PHONY: demo test lint bench clean peers peers-infinity

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

# infinity-emb, the serving peer of benchmarks/serve_load.py, pins numpy<2, sentence-transformers<4, transformers<=5.0,
# typer 0.12 and uvicorn 0.32: its own virtualenv, on our CPU torch (PIP_CONSTRAINT). The versions that ran here
# (all-MiniLM-L6-v2 from a local folder, HF_HUB_OFFLINE=1, `infinity_emb v2 --engine torch --device cpu`). Without
# optimum (not in these extras) it runs the model through sentence-transformers, no BetterTransformer.
peers-infinity:
	test -x .venv-infinity/bin/python || $(PYTHON) -m venv .venv-infinity
	.venv-infinity/bin/pip install -q "infinity-emb[server,torch]==0.0.78" torch==2.13.0 "sentence-transformers==3.4.1" \
		"transformers==4.57.6" "tokenizers==0.22.2" "huggingface_hub==0.36.2" "numpy==1.26.4" "fastapi==0.165.0" \
		"starlette==1.10.0" "pydantic==2.14.4" "uvicorn[standard]==0.32.1" "orjson==3.13.0"

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
