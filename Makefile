# Two commands from a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.neardup-installed

.PHONY: install system-deps demo test lint bench clean

# Debian packages the tests need: headless Chromium for the HTML report tests. Installed only
# when missing (needs root or sudo, as on the project's machines and CI).
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)
system-deps:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

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

test: system-deps $(STAMP)
	$(PY) -m pytest

# ruff (PLC2701 included: see pyproject) and the seam check (no private names or private
# modules imported across packages; tools/check_seams.py says the rules).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) tools/check_seams.py

bench: $(STAMP)
	$(PY) benchmarks/bench_duplicates.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
