# Every target installs what it needs first (a venv from requirements.txt and
# the Debian data packages), so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONPATH := $(CURDIR)

.DEFAULT_GOAL := help
.PHONY: help setup debian demo test classify tflite clean

help: ## list the targets
	@grep -E '^[a-z][a-z_-]*:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

debian: ## install the Debian data packages (Fashion-MNIST, fortunes) if missing
	@scripts/install_debian_packages.sh

setup: $(VENV)/.installed debian ## create the venv and install everything

demo: setup ## train, evaluate and export the default classifier on Fashion-MNIST
	$(PY) -m apps.classify demo

test: setup ## run the test suite (2 workers)
	$(PY) -m pytest -n 2 -q tests

classify: setup ## the classifier app: train, evaluate and export (ARGS="--model lenet5 ...")
	$(PY) -m apps.classify train $(ARGS)
	$(PY) -m apps.classify evaluate
	$(PY) -m apps.classify export

tflite: setup ## export the last classifier run to SavedModel + float/dynamic/int8 TFLite, parity-checked
	$(PY) -m apps.classify export

clean: ## remove runs and exports (keeps the venv)
	rm -rf runs saved_models/classify
