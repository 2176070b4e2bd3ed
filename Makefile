# The two commands: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := meshfleet engine workflows activities strategies
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint fmt typecheck layers pytest clean bench lock check-lock rbac

# The lock files pin every dependency, with hashes, to the versions the tests
# passed with; pyproject.toml keeps the ranges for library users. `make lock`
# refreshes them with a pinned uv (kept in its own venv, out of the lock); the
# runtime lock is resolved inside the dev lock, so both pin the same versions.
LOCK_TOOL := uv==0.13.9
LOCK_VENV := .venv-lock
LOCK := $(LOCK_VENV)/bin/uv pip compile --quiet --generate-hashes --universal \
	--python-version 3.11 --custom-compile-command 'make lock'

# Runtime install, exactly the locked versions: re-done when the lock or pyproject changes.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Development install (tests, linters), exactly the locked versions.
$(VENV)/.installed-dev: pyproject.toml requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@ $(VENV)/.installed

$(LOCK_VENV)/bin/uv:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet '$(LOCK_TOOL)'

# Re-resolve both locks from pyproject.toml, keeping every pin that still fits;
# `make lock UPGRADE=1` moves each pin to the newest release its range allows.
lock: $(LOCK_VENV)/bin/uv
	$(LOCK) $(if $(UPGRADE),--upgrade) pyproject.toml --extra dev -o requirements-dev.lock
	$(LOCK) pyproject.toml -c requirements-dev.lock -o requirements.lock

# The venv holds exactly the locked versions (what CI checks after installing).
check-lock: $(VENV)/.installed-dev
	$(BIN)/python .ci/check_lock.py requirements-dev.lock

demo: $(VENV)/.installed
	$(BIN)/meshfleet demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy --strict $(PACKAGES)

layers: $(VENV)/.installed-dev
	$(BIN)/lint-imports

# Most tests wait (on timers, dev servers, subprocesses), not compute: pytest-xdist runs
# them on several workers, each with its own Temporal dev server on free ports and its
# own temporary directories; two workers for two cores keeps the wall-clock budgets some
# tests assert (the walkthrough's three minutes) safe. `make pytest PYTEST_WORKERS=0`
# runs them in one process. pytest's exit code 5 (no tests collected) still fails.
PYTEST_WORKERS ?= 2
pytest: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)

test: lint typecheck layers pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/update_run.py --members 255 --repeat 5

clean:
	rm -rf $(VENV) $(LOCK_VENV) .meshfleet .pytest_cache .mypy_cache .ruff_cache build *.egg-info

# The worker's RBAC, generated from the backend's declared API calls
# (activities/backends/kubernetes/_api.py); tests/deploy/test_rbac.py fails when stale.
RBAC_ACCESS := deploy/kubernetes/overlays/kubernetes-backend/access.yaml
rbac: $(VENV)/.installed
	$(BIN)/python -m activities.backends.kubernetes.rbac member > deploy/kubernetes/member-rbac.yaml
	$(BIN)/python -m activities.backends.kubernetes.rbac management --access $(RBAC_ACCESS) \
		> deploy/kubernetes/overlays/kubernetes-backend/management-rbac.yaml
