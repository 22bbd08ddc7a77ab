# The README's two commands, each from a fresh clone:
#
#   make test   create/reuse .venv, install snl-mm and its pinned dependencies, build (or reuse the cached)
#               compiled mmcv with tools/build_mmcv.sh, run the test suite (both tiers; what CI runs)
#   make test-fast   the same set-up, then the unit tier only (pytest -m "not slow"; tests/conftest.py assigns
#               the integration tier): the edit loop
#   make demo   create/reuse .venv, install, run the demo job (tools/demo.sh); mmcv-lite is enough
#
# The installation runs once: it is recorded by a stamp file that depends on the packaging files, so a
# second run goes straight to the tests / the demo. `make install` only installs; `make clean-venv` removes it;
# `make test TESTS=tests/compat PYTEST_ARGS=-x` runs a part of the suite; the tests run in one pytest-xdist worker
# per core (`WORKERS=0`: one process).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
TORCH := torch==2.14.1 torchvision==0.29.1
EXTRAS := all,tests
STAMP := $(VENV)/.snl_mm-installed
TESTS ?= tests
PYTEST_ARGS ?=
# pytest-xdist workers: one per core (`make test WORKERS=0` runs in one process)
WORKERS ?= auto

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: test test-fast demo install mmcv clean-venv

test: $(STAMP)
	bash tools/build_mmcv.sh $(PY)
	$(PY) -m pytest $(TESTS) -p no:cacheprovider -n $(WORKERS) --durations=30 $(PYTEST_ARGS)

test-fast: $(STAMP)
	bash tools/build_mmcv.sh $(PY)
	$(PY) -m pytest $(TESTS) -p no:cacheprovider -n $(WORKERS) -m "not slow" --durations=10 $(PYTEST_ARGS)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" VIRTUAL_ENV="$(CURDIR)/$(VENV)" bash tools/demo.sh

install: $(STAMP)

mmcv: $(STAMP)
	bash tools/build_mmcv.sh $(PY)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml $(wildcard requirements/*.txt) | $(PY)
	@echo "[make] installing snl-mm and its pinned dependencies into $(VENV)"
	$(PIP) install -q -c $(CONSTRAINTS) pip setuptools wheel
	@# torch first and alone, so that nothing later resolves a second torch
	$(PIP) install -q -c $(CONSTRAINTS) $(TORCH)
	@# mmcv-lite and a compiled mmcv (tools/build_mmcv.sh) install the same `mmcv` package: never put the
	@# lite one over a compiled one
	if $(PIP) show -q mmcv >/dev/null 2>&1; then \
	  echo "[make] compiled mmcv present: keeping it"; \
	else \
	  $(PIP) install -q -c $(CONSTRAINTS) mmcv-lite; \
	fi
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	@# dependency conflicts fail here; decord 0.6.0's wheel metadata names a cp36 tag, which `pip check`
	@# reports as "not supported on this platform" although the wheel works: that one line is ignored
	@problems=$$($(PIP) check 2>&1 | grep -v '^decord .* is not supported on this platform' || true); \
	if [ -n "$$problems" ] && [ "$$problems" != "No broken requirements found." ]; then \
	  echo "$$problems"; exit 1; \
	fi
	$(PY) -c "import torch, mmengine, mmcv, mmpretrain, mmaction; \
	  print('[make] torch', torch.__version__, '| mmengine', mmengine.__version__, '| mmcv', mmcv.__version__)"
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
