# bnhw developer entry points.  Everything runs inside a local virtualenv
# (.venv) that `make install` creates, so a fresh clone needs only python3.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.bnhw-installed
JOBS   ?= auto

.PHONY: install test bench lint clean cpu-runtime check-readme

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
	$(PY) -m pytest -q -n $(JOBS) --dist worksteal tests

# Every command of README.md's shell blocks, in order, as written (CI runs them with reduction flags:
# tests/test_readme_commands.py).  Long: the README's searches and builds at their documented sizes.
check-readme: install
	BNHW_README_FULL=1 $(PY) -m pytest -q -s tests/test_readme_commands.py

bench: install
	$(PY) -m bnhw.bench --out bench/out

# The standalone CPU runtime (bnhw-run: loads a .bnhwcpu model file, no Python):
#   make cpu-runtime                   for this machine (also on the board itself); on x86-64 the one
#                                      binary runs on any x86-64 CPU with popcnt: the AVX2 / AVX-512
#                                      kernels are chosen at run time (--kernels, $BNHW_KERNELS)
#   make cpu-runtime CPU_ARCH=armv7    Cortex-A9 (PYNQ-Z2's PS), static, NEON
#   make cpu-runtime CPU_ARCH=aarch64  Cortex-A53/A72, static, NEON
# Output: build/cpu/<arch>/bnhw-run (every src/*.c but the stand-alone test and counting programs).  The flags are those of bnhw.hw.cpu.cross.TARGETS (a test checks).
CPU_SRC       := bnhw/hw/cpu/src
CPU_C         := $(filter-out $(CPU_SRC)/kernel_test.c $(CPU_SRC)/bgemm_count.c,$(wildcard $(CPU_SRC)/*.c))
CPU_ARCH      ?= native
CC_native     ?= gcc
FLAGS_native  ?= -O3 -std=c99 -pthread $(if $(filter x86_64,$(shell uname -m)),-mpopcnt,)
CC_armv7      := arm-linux-gnueabihf-gcc
FLAGS_armv7   := -O3 -std=c99 -mcpu=cortex-a9 -mfpu=neon -mfloat-abi=hard -static -pthread
CC_aarch64    := aarch64-linux-gnu-gcc
FLAGS_aarch64 := -O3 -std=c99 -mcpu=cortex-a53 -static -pthread

cpu-runtime: build/cpu/$(CPU_ARCH)/bnhw-run

build/cpu/%/bnhw-run: $(CPU_C) $(wildcard $(CPU_SRC)/*.h)
	@command -v $(CC_$*) >/dev/null || { echo "error: $(CC_$*) not found (apt-get install -y gcc-arm-linux-gnueabihf gcc-aarch64-linux-gnu)"; exit 2; }
	mkdir -p $(@D)
	$(CC_$*) $(FLAGS_$*) -I$(CPU_SRC) -o $@.tmp $(CPU_C) -lm && mv $@.tmp $@

# ruff, mypy (pyproject.toml: strict on spec/, errors, estimators/), and the import contract
# (docs/ARCHITECTURE.md, tests/test_architecture.py); .ci/run runs this before the tests
lint: install
	$(VENV)/bin/ruff check bnhw tests
	$(VENV)/bin/mypy
	$(PY) tests/test_architecture.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache bench/out
