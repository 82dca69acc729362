# Two entry points for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
SHARED_MODELS ?= ../shared/models

.PHONY: venv defaults bytecode serve test test-fast lint build build-gpu container container-test promtool import-animegan grid precision-grid bench-preprocess bench-cold-start bench-overhead bench-streams bench-service bench-cost bench-twin loadtest-day loadtest-capacity loadtest-fleet clean

$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .  # the project's packages, as users import them
	touch $@

venv: $(BIN)/.installed

defaults: venv
	$(BIN)/python -m model_store build-defaults
	$(MAKE) --no-print-directory bytecode

# The service's own modules compiled ahead: where Python may not write bytecode
# (PYTHONDONTWRITEBYTECODE, a read-only file system) each of the four processes would compile
# them at every start, 0.2 s of a 2 s cold start (docs/performance.md). Only what changed.
bytecode: venv
	$(BIN)/python -m compileall -q service.py toonify preprocess model_store

serve: defaults
	$(BIN)/bentoml serve service:Toonify --port $(PORT)

test: venv  # every test: served instances, the container, the page in Chromium (CI runs this)
	$(BIN)/python -m pytest -q

# The tier to run while you work: every test that starts no server or subprocess, builds nothing
# and imports no real model (under 30 s on 2 cores). Markers: pyproject.toml and tests/conftest.py.
test-fast: venv
	$(BIN)/python -m pytest -q -m "not served and not container and not browser and not slow"

lint: venv  # style, then the layering in pyproject.toml's import-linter contracts
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

build: defaults
	$(BIN)/bentoml build

build-gpu: defaults  # bentofile.yaml with deploy/gpu/overrides.yaml merged in
	mkdir -p build && $(BIN)/python deploy/gpu/bentofile.py > build/bentofile.gpu.yaml
	$(BIN)/bentoml build -f build/bentofile.gpu.yaml

container: defaults  # the OCI image, models inside, built with podman (docs/deploy.md)
	$(BIN)/python deploy/container/build.py

container-test: venv  # run it as users do: non-root, read-only, PORT, SIGTERM mid-request
	$(BIN)/python deploy/container/check.py

promtool:  # the Prometheus config and rules, checked and unit-tested by Prometheus itself
	cd deploy/prometheus && promtool check config prometheus.yml && promtool check rules rules.yml \
		&& promtool test rules rules.test.yml

import-animegan: defaults
	$(BIN)/python -m model_store import-generator $(SHARED_MODELS)/animeganv3_tiny_cute.onnx \
		--name animeganv3 --layout NHWC --value-range=-1,1 --size 512 \
		--licence "AnimeGANv3 author's terms: non-commercial use only"

grid: defaults
	$(BIN)/python docs/make_grid.py

precision-grid: venv  # fp32, bf16 and int8 side by side: docs/images/precision-grid.jpg
	$(BIN)/python docs/make_precision_grid.py

bench-preprocess: venv
	$(BIN)/python -m benchmarks.preprocess_stages

bench-cold-start: venv  # where the seconds to /readyz go, per process, beside BentoML's own floor
	$(BIN)/python -m benchmarks.cold_start --floor

bench-overhead: defaults  # served CPU per image against the same stages in one process; flame graphs
	$(BIN)/python -m benchmarks.overhead --profile docs/images --floor

bench-service: defaults
	$(BIN)/python -m benchmarks.service_vs_raw

bench-cost: defaults
	$(BIN)/python -m benchmarks.cost

bench-streams: defaults  # a generator's images/s on one stream and on several, side by side
	$(BIN)/python -m benchmarks.generator_streams --model toon-filter:latest

bench-twin: venv  # the seed's model served our way and the 2020 way, at int8 and bf16
	$(BIN)/python -m benchmarks.cost_twin

loadtest-day: defaults
	$(BIN)/python -m loadtest day --start

loadtest-fleet: container  # two containers behind HAProxy, scraped by Prometheus, the day
	$(BIN)/python -m loadtest day --fleet 2 --out docs/loadtest/day-fleet

loadtest-capacity: import-animegan
	$(BIN)/python -m loadtest capacity --start --model animeganv3:latest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
