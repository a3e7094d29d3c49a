# recstream — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: help setup system-packages jars services services-down services-status services-check redis-cluster redis-cluster-down spark-cluster spark-cluster-down spark-cluster-status demo test test-ml100k lint docs bench clean

help: ## Show this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'

setup: system-packages $(INSTALLED) jars ## Install everything: Debian packages, .venv, Kafka and connector jars

system-packages: ## Install redis-server, Java 17, Maven and OpenBLAS if missing
	@scripts/install-system-packages.sh

$(INSTALLED): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "recstream needs Python 3.11 or newer, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "venv: installing recstream and its dependencies into $(VENV)"
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

jars: $(INSTALLED) ## Resolve the Kafka broker and Spark's Kafka connector from Maven Central
	@$(PY) -m recstream_infra.bootstrap

KAFKA_BROKERS ?=

services: setup ## Start the local Kafka (KRaft) and Redis on 127.0.0.1 (KAFKA_BROKERS=3: a replicated 3-node cluster)
	@$(if $(KAFKA_BROKERS),RECSTREAM_LOCAL_KAFKA_BROKERS=$(KAFKA_BROKERS) )$(PY) -m recstream_infra.services up

services-down: ## Stop the local services that `make services` started
	@if [ -x $(PY) ]; then $(PY) -m recstream_infra.services down; else echo "no .venv: nothing was started"; fi

services-status: ## Show whether the local services run
	@if [ -x $(PY) ]; then $(PY) -m recstream_infra.services status; else echo "no .venv: nothing was started"; fi

services-check: $(INSTALLED) ## Probe the configured Kafka and Redis (local or not)
	@$(PY) -m recstream_infra.services check

redis-cluster: setup ## Start a local Redis Cluster: 3 masters and 3 replicas on 127.0.0.1:7000-7005
	@RECSTREAM_REDIS_CLUSTER=true RECSTREAM_REDIS_URL=$${RECSTREAM_REDIS_CLUSTER_URL:-redis://127.0.0.1:7000/0} $(PY) -m recstream_infra.redis_cluster up

redis-cluster-down: ## Stop the local Redis Cluster that `make redis-cluster` started
	@if [ -x $(PY) ]; then RECSTREAM_REDIS_CLUSTER=true RECSTREAM_REDIS_URL=$${RECSTREAM_REDIS_CLUSTER_URL:-redis://127.0.0.1:7000/0} $(PY) -m recstream_infra.redis_cluster down; else echo "no .venv: nothing was started"; fi

spark-cluster: setup ## Start a local Spark standalone cluster: a master (spark://127.0.0.1:7077) and 2 workers
	@$(PY) -m recstream_infra.spark_cluster up

spark-cluster-down: ## Stop the local Spark cluster that `make spark-cluster` started
	@if [ -x $(PY) ]; then $(PY) -m recstream_infra.spark_cluster down; else echo "no .venv: nothing was started"; fi

spark-cluster-status: ## Show whether the local Spark cluster runs
	@if [ -x $(PY) ]; then $(PY) -m recstream_infra.spark_cluster status; else echo "no .venv: nothing was started"; fi

DATASET ?= auto
DEMO_SECONDS ?= 300
DEMO_RATE ?= 400

demo: setup ## Everything end to end: services, job, API, a replay; prints live, writes demo-report/ (DATASET=, DEMO_SECONDS=, DEMO_RATE=)
	@$(PY) -m recstream_infra.demo --dataset "$(DATASET)" --seconds "$(DEMO_SECONDS)" --rate "$(DEMO_RATE)"

lint: $(INSTALLED) ## ruff (lint and format check), mypy (the packages and the benchmarks), and the import layers (import-linter)
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@$(PY) -m mypy
	@$(PY) -m mypy benchmarks/*.py
	@$(VENV)/bin/lint-imports

docs: $(INSTALLED) ## Build the docs site into site/ (MkDocs, strict: a broken link fails)
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

test: setup lint docs ## Lint, the docs build, then the whole pytest suite (unit and integration, against real services)
	@$(PY) -m pytest

test-ml100k: setup ## The end-to-end tests again on the real MovieLens 100K (RECSTREAM_ML100K_DIR, else ../shared/data/ml-100k)
	@RECSTREAM_TEST_MOVIELENS=real $(PY) -m pytest tests/integration/streaming/test_streaming_job.py tests/integration/streaming/test_faults.py tests/integration/recstream_infra/test_demo.py tests/integration/recstream_infra/test_notebook.py tests/integration/producer/test_producer_replay.py tests/unit/producer/test_tfds_source.py

bench: setup ## Run the benchmarks under benchmarks/
	@shopt -s nullglob; benches=(benchmarks/bench_*.py); \
	if [ $${#benches[@]} -eq 0 ]; then echo "no benchmarks yet"; fi; \
	for bench in "$${benches[@]}"; do echo "== $$bench"; $(PY) "$$bench" || exit 1; done

clean: services-down redis-cluster-down spark-cluster-down ## Remove .venv, the jar cache and service state
	rm -rf $(VENV) .cache .state
