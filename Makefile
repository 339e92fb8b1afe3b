# Two-command quickstart: `make demo` (main job) and `make test` (test suite).
# Each target creates the virtual environment in .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here (not in pyproject) so a fresh machine takes the CPU build instead of a
# multi-GB CUDA build; pyproject keeps the range torch>=2.2.
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow lint docs bench wheel-check setup setup-dev clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.base: $(BIN)/activate pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev,ray,hf,openspiel,docs,tune]"
	touch $@

setup: $(VENV)/.base
setup-dev: $(VENV)/.dev

demo: $(VENV)/.base
	$(BIN)/nlhf-zoo demo

# numpy picks SIMD kernels by CPU (AVX-512, AVX2, ...) and they may differ in the last bit: the
# tests marked cpu_kernels (floats against stored references) run again on the baseline kernels.
NPY_BASELINE = NPY_DISABLE_CPU_FEATURES="$$($(BIN)/python -c 'import numpy as np; c = getattr(np, "_core", None) or np.core; print(" ".join(c._multiarray_umath.__cpu_dispatch__))')"

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -m "not slow"
	$(NPY_BASELINE) $(BIN)/python -m pytest -q -m "cpu_kernels and not slow"

test-slow: $(VENV)/.dev
	$(BIN)/python -m pytest -q -m slow

lint: $(VENV)/.dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The documentation site (docs/, mkdocs.yml) into site/; --strict fails on a broken link, a missing
# API reference or a docstring that does not render. Its examples run in tests/docs/.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Regenerates the tables of benchmarks/README.md (about 5 minutes on 2 CPU cores, one thread);
# BASELINE_REF=<git rev> adds token training measured with that revision's code as the anchor.
BASELINE_REF ?=
bench: $(VENV)/.dev
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/env_throughput.py --readme benchmarks/README.md
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/gpu.py --device cpu --quick --readme benchmarks/README.md \
		$(if $(BASELINE_REF),--baseline-ref $(BASELINE_REF))

# Build the wheel, install it (not editable) into a fresh virtual environment and run the installed
# command outside the source tree: the zoo configs and the shipped models must come with the wheel.
WHEEL_VENV := .wheel-venv
wheel-check: $(VENV)/.base
	rm -rf dist $(WHEEL_VENV)
	$(BIN)/python -m pip wheel -q --no-deps -w dist .
	$(PY) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(WHEEL_VENV)/bin/python -m pip install -q dist/nlhf_zoo-*.whl
	cd "$$(mktemp -d)" && $(CURDIR)/$(WHEEL_VENV)/bin/nlhf-zoo --version \
		&& $(CURDIR)/$(WHEEL_VENV)/bin/nlhf-zoo list > zoo_list.txt && grep -q "nash_mp" zoo_list.txt \
		&& $(CURDIR)/$(WHEEL_VENV)/bin/nlhf-zoo train --agent nash_mp --env nlhf/RPS-v0 \
			--num-queries 1024 --log-folder logs --no-progress \
		&& $(CURDIR)/$(WHEEL_VENV)/bin/nlhf-zoo train --agent online_ipo --env nlhf/TinyTokenDuel-v0 \
			--num-queries 256 --log-folder logs --no-progress \
		&& test -f logs/nash_mp/RPS-v0_1/final.npz
	@echo "wheel-check: the installed wheel lists and trains outside the source tree"

clean:
	rm -rf $(VENV) $(WHEEL_VENV) dist site
