# make demo: create .venv, install dspex, run the whole story end to end on the embedded defaults.
# make test: the same set-up, then the type check and the whole test suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: all venv demo test typecheck lint unit bench clean

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dspex demo

typecheck: $(STAMP)
	$(PY) -m mypy dspex actors pipelines cluster

lint: $(STAMP)
	$(PY) -m ruff check dspex actors pipelines cluster tests benchmarks

test: $(STAMP) typecheck
	$(PY) -m pytest -q -x --durations=15

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .dspex .pytest_cache .mypy_cache build *.egg-info
