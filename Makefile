# Two entry points for a fresh machine (see README):
#   make demo   create .venv, install (CPU torch pinned), run the agent on the bundled real speech sample
#   make test   install dev deps into .venv, lint (ruff), run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
# CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

# The paper-model backends (transformers, NeMo, HTTP server) are tested in their own venv so the
# heavy extras never touch .venv: tiny random models built offline, real loading / decoding code.
EXTRAS_VENV ?= .venv-extras
EXTRAS_PY    = $(EXTRAS_VENV)/bin/python

.PHONY: install dev demo lint format test test-extras bench soak clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e . "$(TORCH_PIN)"
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) install -q -e ".[dev]" "$(TORCH_PIN)"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

demo: install
	$(VENV)/bin/speech-hands demo

# ruff's own configuration is in pyproject.toml (line length 120)
lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest

$(EXTRAS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(EXTRAS_VENV)
	$(EXTRAS_VENV)/bin/pip install -q --upgrade pip
	$(EXTRAS_VENV)/bin/pip install -q "$(TORCH_PIN)"
	$(EXTRAS_VENV)/bin/pip install -q -e ".[test,omni,nemo,server,llm]" "$(TORCH_PIN)"
	touch $@

# exactly the tests marked `extras` (tests/backends/extras/ and the contract suite's heavy backends); the
# LangGraph server and OpenTelemetry tests run in `make test` (the dev extra), not here
test-extras: $(EXTRAS_VENV)/.installed
	$(EXTRAS_PY) -m pytest -p no:cacheprovider -m extras

bench: install
	$(PY) benchmarks/overhead.py

# `speech-hands serve` under 4 clients for 3 minutes with injected tool faults (benchmarks/soak.py); exits 1 on a loss
soak: install
	$(PY) benchmarks/soak.py --clients 4 --minutes 3

clean:
	rm -rf $(VENV) $(EXTRAS_VENV) build *.egg-info
