# Two user-facing targets: `make demo` (the default mini training) and `make test` (the suite);
# `make test-fast` runs tests/unit alone (no Ray cluster, server or launch subprocess).
# Both depend on `install`, which builds .venv/ once and reuses it afterwards.

# Python 3.12 by default; 3.13 works too (`make install PYTHON=python3.13`). espnet 202611,
# the model library, supports exactly these two. tools/find-python also finds pyenv's
# interpreters when another pyenv version is active.
PYTHON ?= python3.12
PYTHON_EXE := $(shell tools/find-python $(PYTHON))
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP := $(PY) -m pip --disable-pip-version-check

DEMO_CONFIG ?= configs/digits_asr.yaml
# Overrides for the demo run, e.g. `make demo DEMO_ARGS="seed=3 name=digits_asr_seed3"`.
DEMO_ARGS ?=
PYTEST_ARGS ?=
# The suite runs in 2 pytest processes (pytest-xdist, a file at a time in each): its end-to-end
# tests mostly wait (Ray start-up, restarts, deadlines), ~0.5 cores busy on average in one process.
TEST_WORKERS ?= 2

.PHONY: install demo test test-fast clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/espnet.txt Makefile
	@test -n "$(PYTHON_EXE)" || { echo "no working '$(PYTHON)' found. espnet3 needs Python 3.12 or 3.13: run 'make install PYTHON=python3.13' or 'make install PYTHON=/path/to/python3.12'" >&2; exit 1; }
	@$(PYTHON_EXE) -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 12), (3, 13)) else "espnet3 needs Python 3.12 or 3.13 (espnet 202611 supports only these); $(PYTHON) is " + sys.version.split()[0] + ": run make install PYTHON=python3.12 (or python3.13, or a path to either)")'
	test -x $(PY) || $(PYTHON_EXE) -m venv $(VENV)
	$(PIP) install -c requirements/constraints.txt -e '.[test]'
	$(PIP) install --no-deps -r requirements/espnet.txt
	$(PY) espnet3/utils/check_install.py --replace-bundled
	touch $(STAMP)

demo: install
	$(PY) -m espnet3.launch --config $(DEMO_CONFIG) --num-gpus 0 $(DEMO_ARGS)

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests/unit

clean-venv:
	rm -rf $(VENV)
