# Entry points for a fresh machine (see README):
#   make run   - create .venv from the lock file (once), run the comparison suite on CPU
#   make test  - create .venv from the lock file (once), run the tests
#   make check - the accuracy regression gate against reports/baseline.json
# The venv is rebuilt only when requirements.lock or pyproject.toml change. The lock holds
# every extra that the tests exercise, Ray (cestab[ray], --executor ray) included.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cestab-installed

.PHONY: setup run test check clean

setup: $(STAMP)

# torch first: with torch==2.13.0 already installed nothing pulls the multi-GB CUDA build.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PY) -m harness.run.warmup  # the numba kernels into the checkout's cache (~10 s, once)
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/cestab run

test: $(STAMP)
	$(PY) -m pytest -q

# The CI gate: a fresh deterministic quick run against the committed baseline (README).
check: $(STAMP)
	$(VENV)/bin/cestab check --baseline reports/baseline.json --quick --quiet --out runs --junit runs/cestab-check.xml

clean:
	rm -rf $(VENV)
