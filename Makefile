# llmembed: `make install`, `make test` (the product's and the harness's tests), `make demo`.
# torch is installed first from its pinned CPU build: a bare `torch` requirement would make pip
# fetch a multi-GB CUDA build.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install models test lint demo

install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q -e benchmarks   # the research harness (llmembed-bench), a separate package

models: install
	llmembed models install minilm-l6 smollm2-135m

lint:
	ruff check src tests benchmarks conftest.py

test:
	$(PYTHON) -m pytest -q

demo: install
	llmembed demo
