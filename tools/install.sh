#!/usr/bin/env bash
# Create .venv/ with the pinned mmaqd stack (torch CPU, mmcv built from source with ops,
# mmengine, mmdet) and install mmaqd in editable mode. Idempotent: a complete venv is
# re-checked in seconds, and the compiled mmcv wheel is cached in $MMAQD_WHEEL_CACHE
# (default ~/.cache/mmaqd/wheels) so that a fresh venv on the same machine skips the
# ~7 minute compile.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
CACHE="${MMAQD_WHEEL_CACHE:-$HOME/.cache/mmaqd/wheels}"
MMCV_VERSION=2.1.0
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

log() { printf '[install %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f'mmaqd is pinned to Python 3.11, the venv has {sys.version.split()[0]}')
PY

log "build requirements (torch, numpy, setuptools<81, ninja)"
"${PIP[@]}" install -r "$ROOT/requirements/build.txt" -c "$ROOT/requirements/lock.txt"

mkdir -p "$CACHE"
wheel=$(ls "$CACHE"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    log "compiling mmcv==$MMCV_VERSION with ops (about 7 minutes on 2 cores)"
    tmp=$(mktemp -d)
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" CFLAGS=-g0 \
        "${PIP[@]}" wheel --no-build-isolation --no-deps "mmcv==$MMCV_VERSION" -w "$tmp"
    mv "$tmp"/mmcv-$MMCV_VERSION-*.whl "$CACHE"/
    rm -rf "$tmp"
    wheel=$(ls "$CACHE"/mmcv-$MMCV_VERSION-*.whl | head -n1)
else
    log "using cached $wheel"
fi
"${PIP[@]}" install "$wheel"

log "runtime, test and deploy (ONNX) requirements"
"${PIP[@]}" install -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt" \
    -r "$ROOT/requirements/deploy.txt" \
    -c "$ROOT/requirements/build.txt" -c "$ROOT/requirements/lock.txt"
"${PIP[@]}" install --no-build-isolation --no-deps -e "$ROOT"

# A wheel that compiled in seconds has no ops; mmdet needs the real NMS.
"$VENV/bin/python" - <<'PY'
import mmcv, mmdet, mmengine, torch
from mmcv.ops import nms
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
keep = nms(boxes, torch.tensor([0.9, 0.8]), 0.5)[1]
assert keep.tolist() == [0], keep
import mmaqd
print(f'stack ok: torch {torch.__version__}, mmcv {mmcv.__version__} (ops), '
      f'mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmaqd {mmaqd.__version__}')
PY
