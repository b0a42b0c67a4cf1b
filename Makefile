# Two entry points do all set-up from a fresh clone: `make test` and `make run`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DDCS_DATA ?= $(abspath ../shared/datasets)

.PHONY: setup test run bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

run: $(STAMP)
	$(PY) -m ddcs_core example --out out/example

bench: $(STAMP)
	$(PY) -m ddcs_core bench lpips --n 200 --m 200 --size 64 --net alex

clean:
	rm -rf $(VENV)
