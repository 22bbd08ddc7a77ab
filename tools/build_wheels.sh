#!/usr/bin/env bash
# The pure-Python wheels a GPU machine with its own Python and torch (and no OpenMMLab package, no network)
# needs to run tools/gpu_check.py: mmengine, mmcv-lite, mmpretrain, mmaction2, mmsegmentation (its configs) and
# the packages they import that such an image lacks. Versions from requirements/constraints.txt; every wheel is
# `py3-none-any`, so one set serves any Python 3 and platform.
#
#   bash tools/build_wheels.sh [DIR] [PYTHON_VERSION]     # default: .whl 3.12
#
# pip goes through its own configuration (index, proxy). `*.whl` is ignored by git; the folder travels with the
# device tool's `carry`, or is copied to the machine by hand.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.whl}"
PY_VERSION="${2:-3.12}"
PIP="${PIP:-$ROOT/.venv/bin/python -m pip}"
PACKAGES=(
  mmengine mmcv-lite mmpretrain mmaction2 mmsegmentation
  # imported by the above, not in a plain PyTorch image
  addict termcolor yapf platformdirs importlib_metadata lazy-importer mat4py model-index ordered-set
  # mmengine reads the packages' config folders (`mmseg::...`) through pkg_resources, which newer setuptools drop
  setuptools
)

mkdir -p "$DIR"
$PIP download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
  -c "$ROOT/requirements/constraints.txt" -d "$DIR" "${PACKAGES[@]}"
ls -1 "$DIR"/*.whl
du -sh "$DIR"
