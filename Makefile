# The two commands: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := engine workflows activities strategies
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint fmt typecheck layers pytest clean bench

# Runtime install: re-done whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Development install (tests, linters): also re-done when pyproject.toml changes.
$(VENV)/.installed-dev: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

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

pytest: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

test: lint typecheck layers pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/update_run.py --members 255 --repeat 5

clean:
	rm -rf $(VENV) .meshfleet .pytest_cache .mypy_cache .ruff_cache build *.egg-info
