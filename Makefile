# Two user-facing targets: `make demo` (the default mini training) and `make test`.
# Both depend on `install`, which builds .venv/ once and reuses it afterwards.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP := $(PY) -m pip --disable-pip-version-check

DEMO_CONFIG ?= configs/digits_asr.yaml
PYTEST_ARGS ?=
# The suite runs in 2 pytest processes (pytest-xdist, a file at a time in each): its end-to-end
# tests mostly wait (Ray start-up, restarts, deadlines), ~0.5 cores busy on average in one process.
TEST_WORKERS ?= 2

.PHONY: install demo test clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/espnet.txt Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "espnet3 needs Python 3.11 (found " + sys.version.split()[0] + "); run: make PYTHON=/path/to/python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c requirements/constraints.txt -e '.[test]'
	$(PIP) install --no-deps -r requirements/espnet.txt
	$(PY) -m espnet3.utils.check_install
	touch $(STAMP)

demo: install
	$(PY) -m espnet3.launch --config $(DEMO_CONFIG) --num-gpus 0

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
