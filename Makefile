# genlab: `make run` sets up .venv once (reinstalling only when pyproject.toml changes),
# runs the whole pipeline with DVC and prints where the reports are.
# `make run CONFIG=configs/mnist_sample.yaml` first makes params.yaml that configuration
# (python -m genlab.config.presets: it validates it, and never overwrites edits of your own).
# `make run VERBOSE=1` shows Keras's epoch lines and TensorFlow's log instead of one progress bar per training.
PYTHON ?= python3.11
# one environment per interpreter: .venv for the default, .venv-<python> for another (make test PYTHON=python3.13)
VENV ?= $(if $(filter python3.11,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000
CONFIG ?=
VERBOSE ?=
AGAINST ?=
JOBS ?= 2   # make test JOBS=0 runs the suite in one process
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
ifneq ($(VERBOSE),)
export GENLAB_VERBOSE := 1   # make run VERBOSE=1: Keras's epoch lines and all of TensorFlow's log
endif
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test lint ui setup clean-venv benchmark search

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependencies (pyproject.toml) change; src/ is installed editable.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
ifneq ($(CONFIG),)
	@$(BIN)/python -m genlab.config.presets $(CONFIG)
endif
	@$(BIN)/python -m genlab.runtime.console repro
	@$(BIN)/python -m genlab.runtime.summary

# the linter first (ruff, configured in pyproject.toml): a second, not a reason to wait for the suite;
# then the suite on $(JOBS) pytest-xdist workers, each module (and the shared end-to-end project) on one
test: lint
	$(BIN)/python -m pytest -n $(JOBS)

lint: $(STAMP)
	$(BIN)/ruff check .

# The UI binds to loopback only unless HOST says otherwise (HOST=0.0.0.0 exposes the store to the network).
ui: $(STAMP)
	@echo "MLflow UI: $$($(BIN)/python -m genlab.runtime.summary --runs-url http://$(HOST):$(PORT))  (Ctrl-C stops it)"
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --host $(HOST) --port $(PORT)

# `make search`: the hyperparameter search of params.yaml's `search:` (search/dvc.yaml, not part of `make run`), as a
# DVC experiment: it prints which of the cheatsheet's choices mattered and the `dvc exp run -S ...` of the best
search: $(STAMP)
	$(BIN)/dvc exp run search/dvc.yaml

# `make benchmark AGAINST=<git revision>`: that revision's forced `dvc repro` beside this tree's (issue 16: 0ed5aa4)
benchmark: $(STAMP)
	$(BIN)/python benchmarks/pipeline.py $(if $(AGAINST),--against $(AGAINST))

clean-venv:
	rm -rf $(VENV)
