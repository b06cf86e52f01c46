# Every target installs what it needs first (a venv from requirements.txt and
# the Debian data packages), so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONPATH := $(CURDIR)

.DEFAULT_GOAL := help
.PHONY: help setup debian demo test classify zoo zoo-full basics visualize style generative generative-quality rl dqn sequence caption segment detect tflite bench serve serve-config serve-bench serve-chaos lint tensorboard constraints clean

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

demo: setup ## train, evaluate and export the default classifier on Fashion-MNIST
	$(PY) -m apps.classify demo

test: setup ## run the test suite (2 workers; lists the 25 slowest tests, each must stay under 60 s)
	$(PY) -m pytest -n 2 -q --durations=25 tests

classify: setup ## the classifier app: train, evaluate and export (ARGS="--model lenet5 ...")
	$(PY) -m apps.classify train $(ARGS)
	$(PY) -m apps.classify evaluate
	$(PY) -m apps.classify export

zoo: setup ## train and evaluate every classifier on one budget; writes runs/classify/zoo/zoo.md (ARGS="--epochs 5")
	$(PY) -m apps.classify zoo $(ARGS)

zoo-full: setup ## every classifier at its own budget (apps/classify/budgets.py) on the full Fashion-MNIST, ~75 min on 2 idle cores; writes runs/classify/zoo/zoo_full.md
	$(PY) -m apps.classify zoo --full $(ARGS)

basics: setup ## the fundamentals as experiments: perceptron, backprop, optimizers, initialization, activations, regularization, pre-training (ARGS="--small")
	$(PY) -m apps.basics all $(ARGS)

visualize: setup ## explain a classifier: every visualization method on a classify run (ARGS="--run runs/classify")
	$(PY) -m apps.visualize all $(ARGS)

style: setup ## neural style transfer of skimage photos with offline random features (ARGS="--steps 300 ...")
	$(PY) -m apps.style transfer $(ARGS)

MODEL ?= vae
generative: setup ## generative models: train, evaluate, export (MODEL=vae|cvae|gan|dcgan|cgan|wgan_gp|cyclegan|ae|... ARGS="--epochs 5")
	test -f runs/generative/judge_fashion_mnist/model.keras || $(PY) -m apps.generative judge
	$(PY) -m apps.generative train --model $(MODEL) $(ARGS)
	$(PY) -m apps.generative evaluate --model $(MODEL)
	$(PY) -m apps.generative export --model $(MODEL)

generative-quality: setup ## sample-quality table: every sampling model at its budget, scored by the judge (runs/generative/quality/quality.md)
	$(PY) -m apps.generative quality --models all $(ARGS)

rl: setup ## RL notes: bandits (and contextual), tabular policies vs optimal, REINFORCE on CartPole, MCTS + policy-value net on tic-tac-toe
	$(PY) -m apps.rl bandits
	$(PY) -m apps.rl contextual
	$(PY) -m apps.rl tabular
	$(PY) -m apps.rl reinforce
	$(PY) -m apps.rl mcts train
	$(PY) -m apps.rl mcts evaluate
	$(PY) -m apps.rl mcts export

FRAMES ?= 500000
dqn: setup ## DQN on Pong (FRAMES=500000; rerun resumes): train, evaluate (GIF), export + TFLite parity, play
	$(PY) -m apps.rl dqn train --preset pong --frames $(FRAMES) $(ARGS)
	$(PY) -m apps.rl dqn evaluate --out runs/rl/dqn/pong --episodes 10 --epsilon 0.05
	$(PY) -m apps.rl dqn export --out runs/rl/dqn/pong
	$(PY) -m apps.rl dqn play --episodes 1

sequence: setup ## sequence models: char LM, quote classifier, date seq2seq with attention (train, evaluate, export)
	$(PY) -m apps.sequence charlm train --units 128 --layers 2 --epochs 3 --max-chars 400000
	$(PY) -m apps.sequence charlm evaluate
	$(PY) -m apps.sequence charlm export
	$(PY) -m apps.sequence generate "The computer" --method beam --width 4
	$(PY) -m apps.sequence textclass train --model bigru --epochs 4
	$(PY) -m apps.sequence textclass evaluate
	$(PY) -m apps.sequence textclass export
	$(PY) -m apps.sequence dates train --model bahdanau --epochs 4 --train-size 6000
	$(PY) -m apps.sequence dates evaluate --model bahdanau
	$(PY) -m apps.sequence dates export --model bahdanau

caption: setup ## image captioning of multi-object scenes: CNN + GRU with attention (train, evaluate, export)
	$(PY) -m apps.sequence caption train
	$(PY) -m apps.sequence caption evaluate
	$(PY) -m apps.sequence caption export

SEG_MODEL ?= unet
segment: setup ## semantic segmentation of generated scenes: train, evaluate, export, predict (SEG_MODEL=fcn|segnet|unet ARGS="--loss both")
	$(PY) -m apps.segment train --model $(SEG_MODEL) $(ARGS)
	$(PY) -m apps.segment evaluate --model $(SEG_MODEL)
	$(PY) -m apps.segment export --model $(SEG_MODEL)
	$(PY) -m apps.segment predict --model $(SEG_MODEL)

DET_MODEL ?= ssd
detect: setup ## object detection on generated scenes, DET_MODEL=ssd|rcnn (ARGS="--limit 2000 --epochs 4"): train, evaluate, export
	$(PY) -m apps.detect train --model $(DET_MODEL) $(ARGS)
	$(PY) -m apps.detect evaluate --model $(DET_MODEL)
	$(PY) -m apps.detect export --model $(DET_MODEL)

bench: setup ## benchmarks: matmul ceiling, FLOP/s per app, classifier throughput, inference latency/size, DQN rates, peak RSS; rewrites docs/bench.md
	$(PY) bench/run.py $(ARGS)

tflite: setup ## TFLite table for every exported app: size, max abs diff vs SavedModel, accuracy, LiteRT vs SavedModel latency
	$(PY) -m serving tflite $(ARGS)

serve: setup ## write saved_models/models.config + deploy/docker-compose.yml, print the docker run line, run the local TF-Serving-compatible server (127.0.0.1: REST 8501, gRPC 8500)
	$(PY) -m serving config --export-missing $(ARGS)
	$(PY) -m serving serve

serve-config: setup ## only write models.config + the compose file and print the docker run line (ARGS="--policy classify=latest:2")
	$(PY) -m serving config --export-missing $(ARGS)

serve-bench: setup ## requests/s and p50/p99 latency of the local server, REST and gRPC
	$(PY) bench/serving_load.py $(ARGS)

serve-chaos: setup ## the local server under change: hot swap under load, 100 stalled clients, 100k-request soak (RSS), SIGTERM drain (~5 min)
	$(PY) bench/serving_load.py --chaos $(ARGS)

lint: setup ## ruff over the whole repository (ruff.toml); make test runs it first
	$(VENV)/bin/ruff check .

tensorboard: setup ## TensorBoard over every run's logs under runs/ (http://localhost:6006; ARGS="--port 6007")
	$(PY) -m tensorboard.main --logdir runs $(ARGS)

clean: ## remove runs and exports (keeps the venv)
	rm -rf runs saved_models/*/ saved_models/models.config
