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

.PHONY: setup run test regress browser postgres benchmark clean

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

clean:
	rm -rf $(VENV)
