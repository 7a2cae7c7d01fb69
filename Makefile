# imagen-bench: make setup | make run | make test
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA := $(abspath ../shared/data)
export BENCH_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# the private PostgreSQL server of the rating-campaign tests (.ci/postgres.sh starts it)
export BENCH_PG_PORT ?= 54329
export BENCH_TEST_POSTGRES_URL ?= postgresql://bench@127.0.0.1:$(BENCH_PG_PORT)/bench_test

.PHONY: setup run test regress browser postgres benchmark train-layout ship-base clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: setup
	$(PY) -m bench.run model=imagen_base guidance=sweep

browser:
	bash .ci/install-chromium.sh

# installs Debian's postgresql when missing and starts the tests' server on 127.0.0.1 (idempotent)
postgres:
	bash .ci/postgres.sh || { [ "$${CI:-}" != "true" ] && echo "make: no PostgreSQL server here; its tests skip (in CI they fail)"; }

test: setup browser postgres
	$(PY) -m pytest -q tests

# sample-quality regression check: the shipped cascade, fixed seeds, against the committed baseline
regress: setup
	rm -rf results/ci_regression
	$(PY) -m bench.run +experiment=ci_regression hydra.run.dir=results/ci_regression
	$(PY) -m bench.regress run=results/ci_regression baseline=results/baselines/ci_regression.json

# the peer of the speed comparison, installed without letting it change torch (benchmarks/README.md)
benchmark: setup
	$(PY) -m pip install -q --no-deps imagen-pytorch==2.1.0 einops beartype kornia kornia-rs
	$(PY) benchmarks/run.py

# the base's layout curriculum (conf/recipe/base_layout*.yaml, README "The layout curriculum"): ten runs
# from the v1 base, coordinate inputs and queries added, each continuing the last one's train state; each
# resumes from its own checkpoint when run again. Phase 5 trains until the first step's order reaches 0.9
# (bench.order_stop; at most to step 6400), so the phases after it count their steps on from wherever it
# stopped (steps_after). Phases 1-9 attend at 16 and 8 px; phase 10 grows cross-attention at 32 px too
# (the shipped arch, conf/model/imagen_base.yaml; new layers start as the identity: bench.training.load_weights).
# 2.5-3 h on 2 cores with AVX-512. `make ship-base` then ships the last phase as
# checkpoints/base. The same chain from the control base (the text_encoder figure's control arm):
# LAYOUT_DIR=runs/layout_random LAYOUT_FROM=runs/base_random_v1/ema.safetensors LAYOUT_ARGS=text_encoder.kind=random, shipped with
# make ship-base LAYOUT_DIR=runs/layout_random SHIP_TO=checkpoints/base_random LAYOUT_FROM=runs/base_random_v1/ema.safetensors
# The chain starts from the v1 bases (conf/recipe/base.yaml with arch.coords=false
# arch.coord_queries=false 'arch.attn_resolutions=[16,8]', 3000 steps; the control with text_encoder.kind=random), as committed then.
V1_BASE := runs/base_v1/ema.safetensors
V1_RANDOM := runs/base_random_v1/ema.safetensors
LAYOUT_DIR ?= runs/layout
LAYOUT_FROM ?= $(V1_BASE)
LAYOUT_ARGS ?=
SHIP_TO ?= checkpoints/base
# coordinate inputs and queries pinned on (the shipped arch has them too now; the chain adds them to the v1 base)
# and cross-attention at 16 and 8 px for phases 1-9 (LAYOUT), at 32, 16 and 8 px for phase 10 (LAYOUT_32); LAYOUT_ARGS last
LAYOUT_PINS := $(PY) -m bench.train shipped_model.stages.0.arch.coords=true shipped_model.stages.0.arch.coord_queries=true
LAYOUT := $(LAYOUT_PINS) 'shipped_model.stages.0.arch.attn_resolutions=[16,8]' $(LAYOUT_ARGS)
LAYOUT_32 := $(LAYOUT_PINS) 'shipped_model.stages.0.arch.attn_resolutions=[32,16,8]' $(LAYOUT_ARGS)

$(V1_BASE):
	mkdir -p $(@D) && git show d01ffe7212f8b2e15eb2860443a4a730bad78e93:checkpoints/base/ema.safetensors > $@.tmp && mv $@.tmp $@
$(V1_RANDOM):
	mkdir -p $(@D) && git show 5fc028ce5a2072eb1fa08c9a633585021f6821ec:checkpoints/base_random/ema.safetensors > $@.tmp && mv $@.tmp $@

train-layout: setup $(LAYOUT_FROM)
	$(LAYOUT) recipe=base_layout out_dir=$(LAYOUT_DIR)/1_mix recipe.init_from=$(LAYOUT_FROM)
	$(LAYOUT) recipe=base_layout_order out_dir=$(LAYOUT_DIR)/2_left 'recipe.relations=[left of]' recipe.steps=2700 \
	  recipe.continue_from=$(LAYOUT_DIR)/1_mix/train_state.safetensors
	$(LAYOUT) recipe=base_layout_order out_dir=$(LAYOUT_DIR)/3_four recipe.steps=3500 \
	  recipe.continue_from=$(LAYOUT_DIR)/2_left/train_state.safetensors
	$(LAYOUT) recipe=base_layout_order out_dir=$(LAYOUT_DIR)/4_above 'recipe.relations=[left of, right of, above]' \
	  recipe.steps=3800 recipe.continue_from=$(LAYOUT_DIR)/3_four/train_state.safetensors
	$(LAYOUT) recipe=base_layout_order out_dir=$(LAYOUT_DIR)/5_four recipe.steps=6400 recipe.until_order=0.9 \
	  recipe.continue_from=$(LAYOUT_DIR)/4_above/train_state.safetensors
	$(LAYOUT) recipe=base_layout out_dir=$(LAYOUT_DIR)/6_mix recipe.steps_after=1600 \
	  recipe.continue_from=$(LAYOUT_DIR)/5_four/train_state.safetensors
	$(LAYOUT) recipe=base_layout_colors out_dir=$(LAYOUT_DIR)/7_colors recipe.steps_after=1200 \
	  recipe.continue_from=$(LAYOUT_DIR)/6_mix/train_state.safetensors
	$(LAYOUT) recipe=base_layout_colors out_dir=$(LAYOUT_DIR)/8_counting recipe.steps_after=800 \
	  'recipe.category_mix={Colors: 0.4, Counting: 0.4, Positional: 0.2}' \
	  recipe.continue_from=$(LAYOUT_DIR)/7_colors/train_state.safetensors
	$(LAYOUT) recipe=base_layout_colors out_dir=$(LAYOUT_DIR)/9_counting recipe.steps_after=400 \
	  'recipe.category_mix={Colors: 0.25, Counting: 0.6, Positional: 0.15}' recipe.count_gap=0.12 \
	  recipe.continue_from=$(LAYOUT_DIR)/8_counting/train_state.safetensors
	$(LAYOUT_32) recipe=base_layout_colors out_dir=$(LAYOUT_DIR)/10_attn32 recipe.steps_after=600 \
	  'recipe.category_mix={Colors: 0.4, Counting: 0.4, Positional: 0.2}' recipe.count_gap=0.12 \
	  recipe.continue_from=$(LAYOUT_DIR)/9_counting/train_state.safetensors

ship-base: setup
	$(PY) -m bench.ship_chain $(LAYOUT_DIR) $(SHIP_TO) $(LAYOUT_FROM)

clean:
	rm -rf $(VENV)
