# Every target installs what it needs first (a venv from requirements.txt and
# the Debian data packages), so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONPATH := $(CURDIR)

# The same grammar for every app: make <app> MODEL=NAME RUN=DIR ARGS="..." (TASK=NAME for sequence and rl):
# MODEL and RUN reach every step (train, evaluate, export, predict), ARGS the training; without MODEL, the
# app's own default model.
MODEL ?=
RUN   ?=
TASK  ?=
SELECT = $(if $(MODEL),--model $(MODEL)) $(if $(RUN),--run $(RUN))

.DEFAULT_GOAL := help
.PHONY: help setup debian demo test results classify zoo zoo-full basics visualize style generative generative-quality rl dqn sequence caption segment detect tflite bench bench-reference serve serve-config serve-bench serve-chaos lint tensorboard constraints clean

help: ## list the targets
	@grep -E '^[a-z][a-z_-]*:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-13s %s\n", $$1, $$2}'

# The stamp is written last: a .venv without it is half-built (interrupted, or venv/pip missing) and is rebuilt.
$(VENV)/.installed: requirements.txt constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make: Python >= 3.11 is needed; '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo missing) (try: make PYTHON=python3.11 ...)"; exit 2; }
	@test -f $@ || rm -rf $(VENV)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "make: '$(PYTHON) -m venv' failed: install the venv module (Debian/Ubuntu: sudo apt install python3-venv)"; exit 2; }
	@$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV); \
	  echo "make: the new venv has no pip (Debian/Ubuntu: sudo apt install python3-venv python3-pip)"; exit 2; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	touch $@

constraints: $(VENV)/.installed ## refreeze constraints.txt (every transitive version) from the working .venv
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze; } > constraints.txt.new && mv constraints.txt.new constraints.txt

# SKIP_DEBIAN=1: no sudo here. Then Fashion-MNIST (the default dataset of most apps), the quotes of the
# sequence app and the architecture diagram of apps/visualize are missing; mnist5k/digits runs still work.
debian: ## install the Debian data packages (Fashion-MNIST, fortunes, graphviz) if missing; SKIP_DEBIAN=1 skips it
ifeq ($(SKIP_DEBIAN),1)
	@echo "make: SKIP_DEBIAN=1: not installing dataset-fashion-mnist, fortunes, graphviz; apps that read Fashion-MNIST or the quotes will say so (use --dataset mnist5k or digits where an app offers it)"
else
	@scripts/install_debian_packages.sh
endif

setup: $(VENV)/.installed debian ## create the venv and install everything

demo: setup ## train, evaluate and export the default classifier on Fashion-MNIST (the recipe of make classify without MODEL)
	$(PY) -m apps.classify demo $(if $(RUN),--run $(RUN))

test: setup lint ## lint, then the test suite (2 workers; lists the 25 slowest tests, each must stay under 60 s)
	$(PY) -m pytest -n 2 --dist loadfile -q --durations=25 tests

classify: setup ## the classifier app: train, evaluate and export (MODEL=lenet5 RUN=DIR ARGS="--epochs 3 ..."; no MODEL: make demo's recipe)
	$(PY) -m apps.classify train $(SELECT) $(ARGS)
	$(PY) -m apps.classify evaluate $(SELECT)
	$(PY) -m apps.classify export $(SELECT)

zoo: setup ## train and evaluate every classifier on one budget; writes runs/classify/zoo/zoo.md (ARGS="--epochs 5")
	$(PY) -m apps.classify zoo $(if $(RUN),--run $(RUN)) $(ARGS)

zoo-full: setup ## every classifier at its own budget (apps/classify/budgets.py) on the full Fashion-MNIST, ~75 min on 2 idle cores; writes runs/classify/zoo/zoo_full.md
	$(PY) -m apps.classify zoo --full $(if $(RUN),--run $(RUN)) $(ARGS)

basics: setup ## the fundamentals as experiments, each writing its PNGs and table (RUN=DIR: DIR/<experiment>; ARGS="--small --seed 1")
	$(PY) -m apps.basics all $(if $(RUN),--run $(RUN)) $(ARGS)

visualize: setup ## every visualization method on a classify run (RUN=runs/classify/lenet5; PNGs in RUN/visualize; ARGS="--figures DIR --seed 1")
	$(PY) -m apps.visualize all $(if $(RUN),--run $(RUN)) $(ARGS)

style: setup ## the fast stylizer (train, evaluate, export, predict), then Gatys transfer of one photo (RUN=, ARGS= to train)
	$(PY) -m apps.style train $(SELECT) $(ARGS)
	$(PY) -m apps.style evaluate $(SELECT)
	$(PY) -m apps.style export $(SELECT)
	$(PY) -m apps.style predict $(SELECT)
	$(PY) -m apps.style transfer $(if $(RUN),--run $(RUN)/transfer)

generative: setup ## generative models: train, evaluate, export (MODEL=vae|cvae|gan|dcgan|cgan|wgan_gp|cyclegan|ae|... ARGS="--epochs 5")
	test -f runs/generative/judge_fashion_mnist/model.keras || $(PY) -m apps.generative judge
	$(PY) -m apps.generative train $(SELECT) $(ARGS)
	$(PY) -m apps.generative evaluate $(SELECT)
	$(PY) -m apps.generative export $(SELECT)

generative-quality: setup ## sample-quality table: every sampling model at its budget, scored by the judge (runs/generative/quality/quality.md; RUN=DIR)
	$(PY) -m apps.generative quality --models all $(if $(RUN),--run $(RUN)) $(ARGS)

rl: setup ## bandits, contextual bandits, tabular RL, then TASK=reinforce|mcts (default both): train, evaluate, export (RUN, ARGS: with one TASK)
	$(PY) -m apps.rl bandits
	$(PY) -m apps.rl contextual
	$(PY) -m apps.rl tabular
	for task in $(or $(TASK),reinforce mcts); do \
	  $(PY) -m apps.rl train --task $$task $(if $(RUN),--run $(RUN)) $(ARGS) && \
	  $(PY) -m apps.rl evaluate --task $$task $(if $(RUN),--run $(RUN)) && \
	  $(PY) -m apps.rl export --task $$task $(if $(RUN),--run $(RUN)) || exit 1; done

FRAMES ?= 500000
dqn: setup ## DQN on Pong (FRAMES=500000; rerun resumes): train, evaluate (GIF), export + TFLite parity, play (RUN=DIR, ARGS go to train)
	$(PY) -m apps.rl train --task dqn --preset pong --frames $(FRAMES) $(if $(RUN),--run $(RUN)) $(ARGS)
	$(PY) -m apps.rl evaluate --task dqn $(if $(RUN),--run $(RUN)) --episodes 10 --epsilon 0.05
	$(PY) -m apps.rl export --task dqn $(if $(RUN),--run $(RUN))
	$(PY) -m apps.rl play --task dqn $(if $(RUN),--run $(RUN)) --episodes 1

sequence: setup ## one task of apps.sequence, TASK=charlm|textclass|dates|caption (default charlm): train, evaluate, export (MODEL= for textclass and dates, RUN=, ARGS= to train)
	$(PY) -m apps.sequence train --task $(or $(TASK),charlm) $(SELECT) $(ARGS)
	$(PY) -m apps.sequence evaluate --task $(or $(TASK),charlm) $(SELECT)
	$(PY) -m apps.sequence export --task $(or $(TASK),charlm) $(SELECT)

caption: setup ## image captioning of multi-object scenes, CNN + GRU with attention: train, evaluate, export, predict (RUN=, ARGS=)
	$(PY) -m apps.sequence train --task caption $(SELECT) $(ARGS)
	$(PY) -m apps.sequence evaluate --task caption $(SELECT)
	$(PY) -m apps.sequence export --task caption $(SELECT)
	$(PY) -m apps.sequence predict --task caption $(SELECT)

segment: setup ## semantic segmentation of generated scenes: train, evaluate, export, predict (MODEL=fcn|segnet|unet|dilated RUN=DIR ARGS="--loss both")
	$(PY) -m apps.segment train $(SELECT) $(ARGS)
	$(PY) -m apps.segment evaluate $(SELECT)
	$(PY) -m apps.segment export $(SELECT)
	$(PY) -m apps.segment predict $(SELECT)

detect: setup ## object detection on generated scenes: train, evaluate, export (MODEL=ssd|rcnn RUN=DIR ARGS="--limit 2000 --epochs 4")
	$(PY) -m apps.detect train $(SELECT) $(ARGS)
	$(PY) -m apps.detect evaluate $(SELECT)
	$(PY) -m apps.detect export $(SELECT)

results: setup ## every app's headline at its default budget (resumable; rows reused when unchanged) -> docs/results.md (QUICK=1: minutes, nothing rewritten)
	$(PY) bench/headlines.py $(if $(QUICK),--quick) $(ARGS)

bench: setup $(if $(filter 1,$(SKIP_REFERENCE)),,bench-reference) ## benchmarks: matmul ceiling, FLOP/s per app, classifier throughput, inference latency/size, DQN rates (CleanRL beside; SKIP_REFERENCE=1 skips building it), peak RSS; rewrites docs/bench.md
	$(PY) bench/run.py $(ARGS)

bench-reference: ## build .venv-cleanrl/ for make bench's DQN reference: PyTorch CPU, CleanRL 1.2.0's dqn_atari.py fetched, hash-checked, patched for gymnasium 1.x (bench/reference/; network once, ~1.2 GB)
	PYTHON=$(PYTHON) bench/reference/setup_cleanrl.sh

tflite: setup ## TFLite table for every exported app: size, max abs diff vs SavedModel, accuracy, LiteRT vs SavedModel latency
	$(PY) -m serving tflite $(ARGS)

serve: setup ## export every trained run without an export, write saved_models/models.config + deploy/docker-compose.yml, print the docker run line, run the local TF-Serving-compatible server (127.0.0.1: REST 8501, gRPC 8500)
	$(PY) -m serving config --export-missing $(ARGS)
	$(PY) -m serving serve

serve-config: setup ## only export what is missing, write models.config + the compose file and print the docker run line (ARGS="--policy classify_vgg=latest:2")
	$(PY) -m serving config --export-missing $(ARGS)

serve-bench: setup ## requests/s and p50/p99 latency of the local server, REST and gRPC, server-side batching off and on, 1/16/64 clients; writes bench/results/serve_load.json and rewrites its table in docs/deployment.md
	$(PY) bench/serving_load.py $(ARGS)

serve-chaos: setup ## the local server under change: hot swap under load, 100 stalled clients, 100k-request soak (RSS), SIGTERM drain (~5 min)
	$(PY) bench/serving_load.py --chaos $(ARGS)

lint: setup ## ruff over the whole repository (ruff.toml); make test runs it first
	$(VENV)/bin/ruff check .

tensorboard: setup ## TensorBoard over every run's logs under runs/ (http://localhost:6006; ARGS="--port 6007")
	$(PY) -m tensorboard.main --logdir runs $(ARGS)

clean: ## remove runs and exports (keeps the venv)
	rm -rf runs saved_models/*/ saved_models/models.config
