# EdgeLLM: two commands on a fresh machine do all set-up.
#   make serve   create .venv, install everything (bundled models included), serve on 127.0.0.1:8080
#   make test    the same set-up, then lint, type checks and the whole test suite
SHELL := /bin/bash
PYTHON ?= python3.11
CACHE_DIR ?= $(HOME)/.cache/edgellm
BOOTSTRAP := $(CACHE_DIR)/bootstrap
UV_VERSION := 0.13.8
UV := $(BOOTSTRAP)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

# llama.cpp is compiled for this CPU (-march=native), which on Intel CPUs with AMX also compiles
# its AMX-INT8 kernels, and those crash here (a general protection fault in ldtilecfg: their tile
# configuration is half-initialised, llama.cpp PR #26954). So x86-64 builds leave AMX-INT8 out;
# the engine and the reference tools get the same flags. Passed to uv as build settings (not
# through CMAKE_ARGS), so they are part of uv's cache key: a wheel built with other flags is
# not reused.
ifeq ($(shell uname -m),x86_64)
LLAMA_DEFINES ?= CMAKE_C_FLAGS=-mno-amx-int8 CMAKE_CXX_FLAGS=-mno-amx-int8
endif
LLAMA_BUILD_SETTINGS := $(foreach d,$(LLAMA_DEFINES),--config-settings-package llama-cpp-python:cmake.define.$(d))
LLAMA_CMAKE_ARGS := $(foreach d,$(LLAMA_DEFINES),-D$(d))

HOST ?= 127.0.0.1
PORT ?= 8080
PYTEST_ARGS ?=

.PHONY: setup serve test lint typecheck unit integration reference bench clean image image-arm64

$(UV):
	$(PYTHON) -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/pip install --quiet uv==$(UV_VERSION)

# An existing .venv whose llama.cpp was built with other definitions gets it rebuilt (a reinstall
# also refreshes uv's cache entry, so it is asked for only then).
$(VENV)/.synced: $(UV) pyproject.toml uv.lock Makefile
	@sync="$(UV) sync --frozen --python $(PYTHON) $(LLAMA_BUILD_SETTINGS)"; \
	if [ -d $(VENV) ] && [ "$$(cat $(VENV)/.llama-defines 2>/dev/null)" != "$(LLAMA_DEFINES)" ]; then \
		sync="$$sync --reinstall-package llama-cpp-python"; fi; \
	echo "$$sync"; $$sync
	echo "$(LLAMA_DEFINES)" > $(VENV)/.llama-defines
	$(VENV)/bin/edgellm models prepare
	touch $@

setup: $(VENV)/.synced

serve: setup
	$(VENV)/bin/edgellm serve --host $(HOST) --port $(PORT)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: setup
	$(VENV)/bin/mypy

test: setup lint typecheck
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Upstream llama.cpp tools (llama-bench, llama-server, llama-perplexity) built from the sources
# vendored in the pinned llama-cpp-python sdist, into $(CACHE_DIR)/reference: the references
# for benchmarks/ and for the optional reference tests.
reference: $(UV)
	CACHE_DIR=$(CACHE_DIR) UV=$(UV) CMAKE_ARGS="$(strip $(CMAKE_ARGS) $(LLAMA_CMAKE_ARGS))" \
		bash scripts/build_reference.sh

# The container image from deploy/Dockerfile, with docker (when its daemon answers) or podman; on a
# machine that reaches no container registry, a local stand-in for the base image is made first
# (deploy/image/base.sh). tests/container builds it too, once per `make test`.
IMAGE ?= edgellm:local
image:
	bash deploy/image/build.sh $(IMAGE)

# The same for linux/arm64 (the Raspberry Pi 5), under emulation on another machine
# (qemu-user-static with binfmt), then one chat request to a node container of it. Not part of
# CI (over an hour on this 2-vCPU machine; docs/cluster.md).
image-arm64:
	PLATFORM=linux/arm64 bash deploy/image/build.sh $(IMAGE)-arm64
	PLATFORM=linux/arm64 bash deploy/image/chat.sh $(IMAGE)-arm64

bench: setup
	$(VENV)/bin/python benchmarks/engine.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
