#!/usr/bin/env bash
# Build compiled mmcv (with mmcv.ops) from its source release for the PyTorch of the given Python,
# cache the wheel outside the checkout, and install it. A cached wheel is reused: nothing compiles twice.
#
#   tools/build_mmcv.sh [PYTHON]        (default: .venv/bin/python, else python3)
#
# Cache: ${SNL_MM_CACHE:-~/.cache/snl_mm}/wheels/mmcv-<mmcv>_torch-<torch>_<cuXY|cpu>_py<ver>/
# CUDA ops: built when torch is a CUDA build, a GPU is visible and a CUDA toolkit is found (nvcc under
# $CUDA_HOME, /usr/local/cuda or on PATH); FORCE_CUDA=1 builds them on a machine without a visible GPU,
# FORCE_CUDA=0 never.
# mmcv 2.1.0's setup.py asks for -std=c++17; torch >= 2.13 headers need C++20, so the flag is raised.
set -euo pipefail
die() { echo "[build_mmcv] error: $*" >&2; exit 1; }
PY=${1:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
command -v "$PY" >/dev/null 2>&1 || die "no Python interpreter '$PY'"
"$PY" -c "import torch" >/dev/null 2>&1 || die "'$PY' cannot import torch: install PyTorch first"
MMCV_VERSION=${MMCV_VERSION:-2.1.0}
CACHE=${SNL_MM_CACHE:-$HOME/.cache/snl_mm}

# CUDA ops: FORCE_CUDA=1 / FORCE_CUDA=0 (mmcv's own switch) decide; unset, they are built when torch is a
# CUDA build, a GPU is visible and a CUDA toolkit is found ($CUDA_HOME, /usr/local/cuda, nvcc on PATH).
NVCC=""
for cand in "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" /usr/local/cuda/bin/nvcc "$(command -v nvcc || true)"; do
  if [ -n "$cand" ] && [ -x "$cand" ]; then NVCC=$cand; break; fi
done
read -r TORCH_V TORCH_CUDA GPU PY_TAG < <("$PY" - <<'PYEOF'
import sys, torch
print(torch.__version__.split('+')[0], (torch.version.cuda or 'none').replace('.', ''),
      int(torch.cuda.is_available()), f'{sys.version_info[0]}{sys.version_info[1]}')
PYEOF
)
case "${FORCE_CUDA:-auto}" in
  1)
    [ "$TORCH_CUDA" != none ] || die "FORCE_CUDA=1 but this torch is a CPU-only build"
    [ -n "$NVCC" ] || die "FORCE_CUDA=1 but no CUDA toolkit found: set CUDA_HOME (the directory with bin/nvcc)"
    CUDA_TAG=cu$TORCH_CUDA ;;
  0) CUDA_TAG=cpu ;;
  auto)
    if [ "$TORCH_CUDA" != none ] && [ "$GPU" = 1 ]; then
      if [ -n "$NVCC" ]; then CUDA_TAG=cu$TORCH_CUDA; else
        echo "[build_mmcv] warning: a GPU is visible but no CUDA toolkit (nvcc) was found: building the" \
             "CPU ops only; set CUDA_HOME for the CUDA ops" >&2
        CUDA_TAG=cpu
      fi
    else
      CUDA_TAG=cpu
    fi ;;
  *) die "FORCE_CUDA must be 0 or 1, got '$FORCE_CUDA'" ;;
esac
KEY="mmcv-${MMCV_VERSION}_torch-${TORCH_V}_${CUDA_TAG}_py${PY_TAG}"
WHEEL_DIR="$CACHE/wheels/$KEY"
if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
  echo "[build_mmcv] no cached wheel for $KEY: compiling mmcv $MMCV_VERSION (about 11 minutes on 2 cores)"
  command -v "${CXX:-c++}" >/dev/null 2>&1 || die "no C++ compiler (${CXX:-c++}); install g++ (build-essential)"
  start=$(date +%s)
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  # `pip download` of this sdist runs its setup.py, which needs torch in a build environment: fetch the
  # release file from the PyPI simple index instead, checking its sha256.
  "$PY" - "$MMCV_VERSION" "$WORK" <<'PYEOF' || die "could not fetch the mmcv source release from PyPI"
import hashlib, json, sys, urllib.request
version, dest = sys.argv[1], sys.argv[2]
req = urllib.request.Request('https://pypi.org/simple/mmcv/',
                             headers={'Accept': 'application/vnd.pypi.simple.v1+json'})
files = json.load(urllib.request.urlopen(req, timeout=60))['files']
(entry,) = [f for f in files if f['filename'] == f'mmcv-{version}.tar.gz']
data = urllib.request.urlopen(entry['url'], timeout=300).read()
if hashlib.sha256(data).hexdigest() != entry['hashes']['sha256']:
    sys.exit('mmcv source release: sha256 mismatch')
open(f'{dest}/{entry["filename"]}', 'wb').write(data)
PYEOF
  tar -xzf "$WORK"/mmcv-"$MMCV_VERSION".tar.gz -C "$WORK"
  SRC="$WORK/mmcv-$MMCV_VERSION"
  sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
  # its setup.py imports pkg_resources, which setuptools >= 81 no longer ships
  "$PY" -m pip install -q "setuptools>=64,<81" ninja
  export MMCV_WITH_OPS=1
  if [ "$CUDA_TAG" = cpu ]; then
    export FORCE_CUDA=0
  else
    NVCC=$(readlink -f "$NVCC")
    export FORCE_CUDA=1 CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$NVCC")")}
    echo "[build_mmcv] with CUDA ops: $NVCC (CUDA_HOME=$CUDA_HOME)"
  fi
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  "$PY" -m pip wheel -q --no-deps --no-build-isolation "$SRC" -w "$WORK/dist" \
    || die "compiling mmcv $MMCV_VERSION failed (see the compiler output above)"
  mkdir -p "$WHEEL_DIR"
  # move in under a temporary name, then rename: an interrupted run never leaves a partial wheel behind
  for whl in "$WORK"/dist/mmcv-*.whl; do
    cp "$whl" "$WHEEL_DIR/.$(basename "$whl").part"
    mv "$WHEEL_DIR/.$(basename "$whl").part" "$WHEEL_DIR/$(basename "$whl")"
  done
  echo "[build_mmcv] built in $(( $(date +%s) - start )) s: $(ls "$WHEEL_DIR")"
else
  echo "[build_mmcv] reusing cached wheel $(ls "$WHEEL_DIR"/mmcv-*.whl)"
fi
# mmcv-lite and mmcv install the same import package: replace one by the other.
if "$PY" -c "import mmcv.ops" >/dev/null 2>&1; then
  echo "[build_mmcv] compiled mmcv already installed"
else
  "$PY" -m pip uninstall -q -y mmcv-lite >/dev/null 2>&1 || true
  "$PY" -m pip install -q --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
  "$PY" -c "import mmcv.ops, mmcv; print('[build_mmcv] mmcv', mmcv.__version__, 'with ops installed')" \
    || die "the installed mmcv does not load its ops; remove $WHEEL_DIR and run again"
fi
