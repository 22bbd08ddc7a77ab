#!/usr/bin/env bash
# Build compiled mmcv (with mmcv.ops) from its source release for the PyTorch of the given Python,
# cache the wheel outside the checkout, and install it. A cached wheel is reused: nothing compiles twice.
#
#   tools/build_mmcv.sh [PYTHON]        (default: .venv/bin/python, else python3)
#
# Everything it fetches comes through pip, with the user's pip configuration (index-url, extra-index-url,
# find-links, certificates, proxies, credentials): `pip download --no-binary :all:` for the source release,
# checked against the sha256 pinned below (pip's hash-checking mode), and `pip install` for the build tools.
# The compilation runs in a throwaway build environment (a venv with setuptools < 81, wheel and ninja, which
# sees the user's torch): the user's environment only receives the finished mmcv wheel.
#
# Cache: ${SNL_MM_CACHE:-~/.cache/snl_mm}/wheels/mmcv-<mmcv>_torch-<torch>_<cuXY|cpu>_py<ver>/
# CUDA ops: built when torch is a CUDA build, a GPU is visible and a CUDA toolkit is found (nvcc under
# $CUDA_HOME, /usr/local/cuda or on PATH); FORCE_CUDA=1 builds them on a machine without a visible GPU,
# FORCE_CUDA=0 never. MAX_JOBS bounds the parallel compile jobs (default: all cores).
# mmcv 2.1.0's setup.py asks for -std=c++17; torch >= 2.13 headers need C++20, so the flag is raised.
set -euo pipefail
say() { echo "[build_mmcv] $*"; }
die() { echo "[build_mmcv] error: $*" >&2; exit 1; }
PY=${1:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
command -v "$PY" >/dev/null 2>&1 || die "no Python interpreter '$PY'"
"$PY" -c "import torch" >/dev/null 2>&1 || die "'$PY' cannot import torch: install PyTorch first"
# The source release and its sha256 (the one PyPI publishes for mmcv-2.1.0.tar.gz).
MMCV_VERSION=2.1.0
MMCV_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
# its setup.py imports pkg_resources, which setuptools >= 81 no longer ships
BUILD_REQUIREMENTS=("setuptools>=64,<81" wheel ninja)
CACHE=${SNL_MM_CACHE:-$HOME/.cache/snl_mm}

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

build_wheel() {
  command -v "${CXX:-c++}" >/dev/null 2>&1 || die "no C++ compiler (${CXX:-c++}); install g++ (build-essential)"
  local start work env env_py env_site
  start=$(date +%s)
  work=$(mktemp -d)
  trap "rm -rf '$work'" EXIT
  env="$work/build-env"
  env_py="$env/bin/python"

  say "1/4 build environment (throwaway): ${BUILD_REQUIREMENTS[*]}"
  "$PY" -m venv --without-pip "$env" || die "'$PY' could not create a venv (Debian/Ubuntu: install python3-venv)"
  # the user's pip drives the build interpreter (pip >= 22.3); an older pip: the venv's own, from ensurepip
  if "$PY" -m pip --python "$env_py" --version >/dev/null 2>&1; then
    pip_build() { "$PY" -m pip --python "$env_py" "$@"; }
  else
    "$env_py" -m ensurepip -q || die "could not bootstrap pip in the build environment"
    pip_build() { "$env_py" -m pip "$@"; }
  fi
  pip_build install "${BUILD_REQUIREMENTS[@]}" \
    || die "pip could not install the build tools (${BUILD_REQUIREMENTS[*]}); pip's error is above"
  # then the user's packages (torch, numpy...) on the build interpreter's path, after its own: a .pth line
  # appends a directory to sys.path, so the build environment's setuptools shadows the user's
  env_site=$("$env_py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  "$PY" - > "$env_site/snl_mm_build_user_site.pth" <<'PYEOF'
import importlib.util, os, site, sys
keep = set(site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else []))
keep.add(os.path.dirname(os.path.dirname(importlib.util.find_spec('torch').origin)))
keep = {os.path.realpath(p) for p in keep}
print('\n'.join(p for p in sys.path if p and os.path.realpath(p) in keep))
PYEOF
  "$env_py" -c "import torch, setuptools, pkg_resources" 2>/dev/null \
    || die "the build environment cannot import torch and setuptools (< 81) together"

  say "2/4 mmcv $MMCV_VERSION source release through pip (sha256 $MMCV_SHA256)"
  printf 'mmcv==%s --hash=sha256:%s\n' "$MMCV_VERSION" "$MMCV_SHA256" > "$work/mmcv-source.txt"
  pip_build download --no-deps --no-binary :all: --no-build-isolation --require-hashes \
      -r "$work/mmcv-source.txt" -d "$work/src" \
    || die "pip could not download the mmcv $MMCV_VERSION source release; pip's error is above (the index," \
           "proxy and certificates are pip's configuration: pip config list)"
  tar -xzf "$work/src/mmcv-$MMCV_VERSION.tar.gz" -C "$work/src"
  local src="$work/src/mmcv-$MMCV_VERSION"
  sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"

  say "3/4 compiling mmcv $MMCV_VERSION with ops for torch $TORCH_V ($CUDA_TAG; about 11 minutes on 2 cores)"
  export MMCV_WITH_OPS=1
  if [ "$CUDA_TAG" = cpu ]; then
    export FORCE_CUDA=0
  else
    NVCC=$(readlink -f "$NVCC")
    export FORCE_CUDA=1 CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$NVCC")")}
    say "with CUDA ops: $NVCC (CUDA_HOME=$CUDA_HOME)"
  fi
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  # ninja from the build environment runs the parallel compile jobs
  PATH="$env/bin:$PATH" pip_build wheel --no-deps --no-build-isolation "$src" -w "$work/dist" \
    || die "compiling mmcv $MMCV_VERSION failed (see the compiler output above)"

  mkdir -p "$WHEEL_DIR"
  # move in under a temporary name, then rename: an interrupted run never leaves a partial wheel behind
  local whl
  for whl in "$work"/dist/mmcv-*.whl; do
    cp "$whl" "$WHEEL_DIR/.$(basename "$whl").part"
    mv "$WHEEL_DIR/.$(basename "$whl").part" "$WHEEL_DIR/$(basename "$whl")"
  done
  say "built in $(( $(date +%s) - start )) s: $(ls "$WHEEL_DIR")"
}

if ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
  say "reusing cached wheel $(ls "$WHEEL_DIR"/mmcv-*.whl)"
else
  say "no cached wheel for $KEY: building one"
  build_wheel
fi

say "4/4 installing into $("$PY" -c 'import sys; print(sys.prefix)')"
# mmcv-lite and mmcv install the same import package: replace one by the other.
if "$PY" -c "import mmcv.ops" >/dev/null 2>&1; then
  say "compiled mmcv already installed"
else
  "$PY" -m pip uninstall -q -y mmcv-lite >/dev/null 2>&1 || true
  "$PY" -m pip install -q --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
  "$PY" -c "import mmcv.ops, mmcv; print('[build_mmcv] mmcv', mmcv.__version__, 'with ops installed')" \
    || die "the installed mmcv does not load its ops; remove $WHEEL_DIR and run again"
fi
