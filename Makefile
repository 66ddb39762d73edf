# Fleet Active Learning — every entry point a person or CI needs.
#   make demo   set everything up, then run the main job end to end on the bundled real drive
#   make test   set everything up, lint, then run every test (unit, property, integration)
#   make lint   ruff (lint + format check) and mypy --strict on the packages
#   make bench  the benchmarks in bench/ (ratios measured side by side in one run)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
UV_ENV := .cache/uv-env
UV     := $(UV_ENV)/bin/uv
UV_VERSION := 0.13.8
# Debian packages the project needs: libusb for `import open3d`, Java 17 + Maven for the local
# Kafka broker, PostgreSQL for the label-queue tests, Prometheus for the scrape tests, Chromium
# (headless) for the test that the labeling API's /docs renders offline, Fashion-MNIST for the
# evaluation harness (`make bench`, docs/evaluation.md), systemd for `systemd-analyze verify`
# of the units (deploy/systemd; nothing is started under it).
DEB_PACKAGES := libusb-1.0-0 openjdk-17-jre-headless maven postgresql prometheus chromium \
  dataset-fashion-mnist systemd
STAMP  := $(VENV)/.fleetal-installed

.PHONY: help setup system-deps venv lock lint test test-unit test-integration bench demo models kafka-jars kustomize compose-validate clean

help:
	@sed -n '1,6p' Makefile

# --- set-up ---------------------------------------------------------------------------------
system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "need root to apt-get install$$missing; install them and re-run" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# uv lives in a bootstrap environment of its own (not in .venv: `uv sync` makes .venv exactly
# the lock, and would remove itself). It installs from its cache (~/.cache/uv) by hard link: a
# fresh clone (CI) gets its several-GB torch in seconds instead of re-unpacking it.
$(UV):
	$(PYTHON) -m venv $(UV_ENV)
	$(UV_ENV)/bin/python -m pip install -q "uv==$(UV_VERSION)"

# .venv is exactly uv.lock (checked in): `--locked` refuses to run when pyproject.toml and the
# lock disagree, so a fresh machine installs the very versions CI tested. `make lock` updates it.
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --extra centre --extra report --extra test --extra bench --extra evaluate --extra ray --python $(PYTHON) --quiet
	@touch $(STAMP)

# Re-resolve the lock after changing dependencies in pyproject.toml (upgrade one package:
# `.cache/uv-env/bin/uv lock --upgrade-package NAME`). Commit uv.lock with the change.
lock: | $(UV)
	$(UV) lock

venv: $(STAMP)

setup: system-deps venv kafka-jars

kafka-jars: | $(STAMP)
	$(PY) -m deploy.kafka.broker fetch

# kustomize renders deploy/kubernetes for the manifest tests: built once from its Go module
# (the Go toolchain the machine has; modules from the Go proxy) into the user's cache, where a
# fresh clone finds it again.
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE := $(HOME)/.cache/fleetal/kustomize-$(KUSTOMIZE_VERSION)/kustomize
kustomize: $(KUSTOMIZE)
$(KUSTOMIZE):
	@command -v go >/dev/null || { echo "go is needed to build kustomize (deploy/kubernetes tests): install Go >= 1.22" >&2; exit 1; }
	GOBIN=$(dir $(KUSTOMIZE)) GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

# compose-validate (deploy/compose/validate: the Compose Specification's loader, compose-go)
# checks deploy/compose/compose.yaml without a container daemon; cached by its sources' hash.
COMPOSE_VALIDATE_SRC := deploy/compose/validate
COMPOSE_VALIDATE := $(HOME)/.cache/fleetal/compose-validate-$(shell cat $(COMPOSE_VALIDATE_SRC)/main.go $(COMPOSE_VALIDATE_SRC)/go.sum | sha256sum | cut -c1-12)/compose-validate
compose-validate: $(COMPOSE_VALIDATE)
$(COMPOSE_VALIDATE):
	@command -v go >/dev/null || { echo "go is needed to build compose-validate (deploy/compose tests): install Go >= 1.22" >&2; exit 1; }
	cd $(COMPOSE_VALIDATE_SRC) && go build -o $(COMPOSE_VALIDATE) .

# --- checks ---------------------------------------------------------------------------------
lint: $(STAMP)
	$(UV) lock --check --quiet
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup kustomize compose-validate lint
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc

test-unit: venv kustomize compose-validate
	$(PY) -m pytest -q -p no:cacheprovider -m "not integration"

test-integration: setup
	$(PY) -m pytest -q -p no:cacheprovider -m integration

bench: setup $(MODELS)
	$(PY) -m bench

# --- the main job ---------------------------------------------------------------------------
# The reference models are trained on the bundled real data (~2-3 min on 2 cores), once.
MODELS := models/camera.onnx models/camera.pt models/lidar.onnx models/lidar.pt

$(MODELS): | $(STAMP)
	$(PY) -m ingest_service.training.reference.train --out models

models: $(MODELS)

demo: setup $(MODELS)
	$(PY) -m deploy.demo.run

clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache reports var
