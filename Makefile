# bnhw developer entry points.  Everything runs inside a local virtualenv
# (.venv) that `make install` creates, so a fresh clone needs only python3.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.bnhw-installed
JOBS   ?= auto

.PHONY: install test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CPU build of torch first, pinned (see pyproject.toml)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,finn]'
	# FINN (finn-plus) without its pins; see bnhw/hw/finn_compat.py
	$(PY) -m pip install --quiet --no-deps finn-plus==1.6.1
	touch $@

test: install
	$(PY) -m pytest -q -n $(JOBS) tests

bench: install
	$(PY) -m bnhw.bench --out bench/out

lint: install
	$(VENV)/bin/ruff check bnhw tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache bench/out
