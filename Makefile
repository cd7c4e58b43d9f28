# chutes-nomad: `make demo` runs the main job end to end, `make test` sets up and passes the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed
EDITABLE := --config-settings editable_mode=strict

.PHONY: install lint typecheck test test-fast demo bench containers base-image clean

# Dependencies: reinstalled only when the project's metadata changes.
$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77' wheel
	$(PY) -m pip install -q -e '.[dev]' $(EDITABLE)
	touch $(STAMP)

# The project itself: strict editable mode links modules one by one (so mypy resolves the mapped
# packages), which means a new module needs a re-link; it takes about a second.
install: $(STAMP)
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e . $(EDITABLE) 2>/dev/null

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy -p chutes

test: lint typecheck
	$(VENV)/bin/pytest -q

test-fast: install
	$(VENV)/bin/pytest -q -x -m "not e2e and not chaos and not slow"

demo: install
	$(PY) scripts/demo.py

bench: install  # `make bench BENCH_ARGS=--quick`: every figure in about three minutes
	$(PY) -m benchmarks $(BENCH_ARGS)

# Container instances and image builds: podman, buildah, runc & co. (apt, as root; a no-op when installed), then
# the local Python base image. Settings podman needs on these VMs: scripts/containers.conf (CONTAINERS_CONF).
containers:
	bash scripts/containers_setup.sh
	bash scripts/base_image.sh
	@echo "podman's settings for these hosts: export CONTAINERS_CONF=$(CURDIR)/scripts/containers.conf"

# localhost/chutes-base:bookworm: debootstrap bookworm + python3, pip (about 1.5 minutes; cached in podman's storage).
base-image:
	bash scripts/base_image.sh

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
