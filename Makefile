# One command surface for people and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PYTHONPATH := $(CURDIR)/tests/lab
# The modules run on .venv/ee (requirements.txt only, as in an execution environment; scripts/setup.sh), unless the
# caller names another Python.
ANSIBLE_PYTHON_INTERPRETER ?= $(CURDIR)/$(VENV)/ee/bin/python
export ANSIBLE_PYTHON_INTERPRETER
LAB := $(BIN)/python -m asgardlab --state-dir $(CURDIR)/.lab
PYTEST := $(BIN)/python -m pytest

.PHONY: help setup test lint sanity unit lab-tests integration molecule lab-up lab-down lab-status \
        runtimes demo bench build clean test-compat docs docs-lint galaxy-importer

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: ## create .venv (Python >= 3.12) with every pinned dependency; fast when nothing changed
	@scripts/setup.sh

test: setup ## the whole suite: lint, sanity, unit, lab + integration, molecule
	@scripts/test.sh

lint: setup ## ruff, ansible-lint (production profile)
	$(BIN)/ruff check .
	$(BIN)/ansible-lint --profile production

sanity: setup ## ansible-test sanity on the built collection
	@scripts/sanity.sh

unit: setup ## unit tests (no lab)
	$(PYTEST) tests/unit tests/repo

runtimes: setup ## install the lab's MLflow runtimes (first use only)
	$(BIN)/python -m asgardlab.runtimes install

lab-tests: setup runtimes ## lab conformance + kubelet tests (starts the lab)
	$(PYTEST) tests/lab_tests

integration: setup runtimes ## collection against the lab (starts the lab)
	$(PYTEST) tests/integration

molecule: setup runtimes ## molecule scenarios against the lab
	cd $(CURDIR) && $(BIN)/molecule test --all --exclude kind

lab-up: setup ## start the local Kubernetes lab (idempotent); kubeconfig in .lab/kubeconfig
	@$(LAB) up

lab-down: setup ## stop the lab and every pod
	@$(LAB) down

lab-status: setup ## is the lab running, and where
	@$(LAB) status

demo: setup runtimes ## the main job: lab up, seed incident deployed, verify heals it, dashboard on 127.0.0.1:5000
	@scripts/demo.sh

bench: setup runtimes ## benchmarks (not part of make test); writes .bench/results.json
	@scripts/bench.sh

test-compat: setup ## unit tests on the oldest admitted ansible-core too (VERSIONS="2.16 2.18")
	@scripts/test-compat.sh $(VERSIONS)

docs: setup ## regenerate the documentation tables generated from the code (docs/verify.md's finding table)
	$(BIN)/python scripts/gen-docs.py

docs-lint: setup ## antsibull-docs lint + ansible-doc renders every plugin and role
	@scripts/docs-lint.sh

galaxy-importer: setup ## galaxy-importer on the built tarball (offline config)
	@scripts/galaxy-importer.sh

build: setup ## ansible-galaxy collection build into .build/
	@mkdir -p .build && $(BIN)/ansible-galaxy collection build --force --output-path .build .

clean: ## remove build output (not .venv)
	rm -rf .build .bench .pytest_cache
