# Two entry points do all set-up from a fresh clone: `make test` and `make run`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DDCS_DATA ?= $(abspath ../shared/datasets)

.PHONY: setup test run bench bench-app claims screenshots chromium clean ship-run

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

# The browser test drives Debian's Chromium (Playwright never downloads a browser); without root or
# apt it is skipped with its reason.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "no chromium: the browser test will be skipped"

# Then the determinism tests again on the AVX2 kernel path, so a machine difference cannot hide
# (README "Reproducibility contract"); ATEN_CPU_CAPABILITY was measured not to change a number.
AVX2_PATH := ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
test: $(STAMP) chromium
	$(PY) -m pytest -q -n 2 tests
	$(AVX2_PATH) $(PY) -m pytest -q -n 2 tests/test_reproducibility.py tests/test_perceptual.py

run: $(STAMP)
	$(PY) app.py --runs runs --demo

# Every run behind the README's attack tables (runs/demo and runs-sweep/), then the tables.
claims: $(STAMP)
	PY=$(PY) bash benchmarks/claims.sh

# The shipped demo run (checkpoints/demo-run) from a fresh demo attack (resumable), or FROM=a finished run.
ship-run: $(STAMP)
	$(PY) -m ddcs_core demo ship-run $(if $(FROM),--from $(FROM))
	$(PY) -m ddcs_core demo check --run

bench-app: $(STAMP)
	$(PY) benchmarks/bench_app.py --browser

# One PNG per view into assets/screenshots, of the demo run (make run creates it) or of RUN=path.
RUN ?= runs/demo
screenshots: $(STAMP) chromium
	DDCS_SCREENSHOTS=assets/screenshots DDCS_SCREENSHOT_RUN=$(RUN) $(PY) -m pytest -q tests/test_app_e2e.py -k screenshots

bench: $(STAMP)
	$(PY) -m ddcs_core bench lpips --n 200 --m 200 --size 64 --net alex

clean:
	rm -rf $(VENV)
