# Two entry points (see README): `make demo` and `make test`. Both set up first (idempotent).
SHELL := /bin/bash
VENV := .venv
# DDS never leaves this machine unless a user opts in explicitly (multi-host: SUBNET).
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export MUJOCO_GL ?= egl
PYTEST_WORKERS ?= 2

.PHONY: setup demo test lint lock clean

setup:
	@scripts/setup.sh

demo: setup
	$(VENV)/bin/dexh2r demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

# Re-pin after changing dependencies in pyproject.toml.
lock: setup
	$(VENV)/bin/python -m pip freeze --all --exclude-editable | sed -E 's/^(torch==[0-9.]+)\+cpu$$/\1/' \
	  | { echo "# Exact versions of every Python dependency (pip freeze of a working venv)."; \
	      echo "# Used as pip constraints by scripts/setup.sh; regenerate with: make lock"; cat; } > requirements.lock

clean:
	rm -rf $(VENV) build install log .pytest_cache
