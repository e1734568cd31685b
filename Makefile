# Gravity SMS — developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# uv is the one tool the workspace needs; installed with pip when the machine lacks it.
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
PYTEST_ARGS ?=

.PHONY: help uv install run infra test test-fast chaos lint format typecheck schemas bench up down

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

uv: ## Install uv if it is missing
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv

# testcontainers (the devstack's "docker" extra) only where a Docker engine answers
DOCKER_EXTRA = $(shell docker info >/dev/null 2>&1 && echo --extra docker)

install: uv ## Create .venv with every package of the workspace (locked versions)
	@$(UV) sync --locked --all-packages --quiet $(DOCKER_EXTRA)

run: install ## Start embedded Kafka + PostgreSQL (data in .data/) and all four services; Ctrl-C stops everything
	@$(UV) run --no-sync gravity-dev run

infra: install ## Start only the embedded broker and database, print their addresses
	@$(UV) run --no-sync gravity-dev infra

test: install ## Run the whole test suite against a real broker and database
	@$(UV) run --no-sync pytest $(PYTEST_ARGS)

CHAOS_RUNS ?= 3

chaos: install ## Run tests/chaos CHAOS_RUNS times (default 3), then print one summary table
	@mkdir -p .chaos && rm -f .chaos/run-*.log
	@for i in $$(seq $(CHAOS_RUNS)); do \
		echo "chaos run $$i of $(CHAOS_RUNS) (log: .chaos/run-$$i.log)"; \
		$(UV) run --no-sync pytest tests/chaos -s -q -p no:cacheprovider --deselect tests/chaos/test_summary.py \
			> .chaos/run-$$i.log 2>&1; echo "  pytest exit $$?"; \
	done
	@$(UV) run --no-sync python -m tests.chaos.summary $$(ls .chaos/run-*.log | sort -V)

# checkov runs in a tool environment of its own: it pins packaging<24, which the workspace has outgrown
CHECKOV := $(UV) tool run --from checkov==3.3.30 checkov

lint: install ## ruff (lint + format check), mypy --strict, checkov over the Dockerfiles and manifests
	@$(UV) run --no-sync ruff check .
	@$(UV) run --no-sync ruff format --check .
	@$(UV) run --no-sync mypy
	@$(CHECKOV) --config-file deploy/checkov.yaml

format: install ## Format and auto-fix
	@$(UV) run --no-sync ruff format .
	@$(UV) run --no-sync ruff check --fix .

typecheck: install ## mypy --strict over every package
	@$(UV) run --no-sync mypy

schemas: install ## Regenerate the committed JSON Schemas and the AsyncAPI document from the event models
	@$(UV) run --no-sync python -m gravity_events.schemas

bench: install ## Run the benchmarks and write bench/results/latest.md
	@$(UV) run --no-sync python -m bench

up: ## docker compose: the production shape (Apache Kafka, PostgreSQL, four services, nginx)
	docker compose up --build -d

down: ## docker compose down
	docker compose down
