# Two-command quickstart: `make demo` (main job) and `make test` (test suite).
# Each target creates the virtual environment in .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here (not in pyproject) so a fresh machine takes the CPU build instead of a
# multi-GB CUDA build; pyproject keeps the range torch>=2.2.
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow lint bench setup setup-dev clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.base: $(BIN)/activate pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev,ray,hf]"
	touch $@

setup: $(VENV)/.base
setup-dev: $(VENV)/.dev

demo: $(VENV)/.base
	$(BIN)/nlhf-zoo demo

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(VENV)/.dev
	$(BIN)/python -m pytest -q -m slow

lint: $(VENV)/.dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Regenerates the tables of benchmarks/README.md (about 5 minutes on 2 CPU cores, one thread);
# BASELINE_REF=<git rev> adds token training measured with that revision's code as the anchor.
BASELINE_REF ?=
bench: $(VENV)/.dev
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/env_throughput.py --readme benchmarks/README.md
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/gpu.py --device cpu --quick --readme benchmarks/README.md \
		$(if $(BASELINE_REF),--baseline-ref $(BASELINE_REF))

clean:
	rm -rf $(VENV)
