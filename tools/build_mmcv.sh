#!/usr/bin/env bash
# Build compiled mmcv (with mmcv.ops) from its source release for the PyTorch of the given Python,
# cache the wheel outside the checkout, and install it. A cached wheel is reused: nothing compiles twice.
#
#   tools/build_mmcv.sh [PYTHON]        (default: .venv/bin/python, else python3)
#
# Cache: ${SNL_MM_CACHE:-~/.cache/snl_mm}/wheels/mmcv-<mmcv>_torch-<torch>_<cuda|cpu>_py<ver>/
# mmcv 2.1.0's setup.py asks for -std=c++17; torch >= 2.13 headers need C++20, so the flag is raised.
set -euo pipefail
PY=${1:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
MMCV_VERSION=${MMCV_VERSION:-2.1.0}
CACHE=${SNL_MM_CACHE:-$HOME/.cache/snl_mm}
read -r TORCH_V CUDA_TAG PY_TAG < <("$PY" - <<'PYEOF'
import sys, torch
cuda = 'cu' + torch.version.cuda.replace('.', '') if (torch.version.cuda and torch.cuda.is_available()) else 'cpu'
print(torch.__version__.split('+')[0], cuda, f'{sys.version_info[0]}{sys.version_info[1]}')
PYEOF
)
KEY="mmcv-${MMCV_VERSION}_torch-${TORCH_V}_${CUDA_TAG}_py${PY_TAG}"
WHEEL_DIR="$CACHE/wheels/$KEY"
if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
  echo "[build_mmcv] no cached wheel for $KEY: compiling mmcv $MMCV_VERSION (about 11 minutes on 2 cores)"
  start=$(date +%s)
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  # `pip download` of this sdist runs its setup.py, which needs torch in a build environment: fetch the
  # release file from the PyPI simple index instead, checking its sha256.
  "$PY" - "$MMCV_VERSION" "$WORK" <<'PYEOF'
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
  [ "$CUDA_TAG" = cpu ] && export FORCE_CUDA=0
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  "$PY" -m pip wheel -q --no-deps --no-build-isolation "$SRC" -w "$WORK/dist"
  mkdir -p "$WHEEL_DIR"
  mv "$WORK"/dist/mmcv-*.whl "$WHEEL_DIR"/
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
  "$PY" -c "import mmcv.ops, mmcv; print('[build_mmcv] mmcv', mmcv.__version__, 'with ops installed')"
fi
