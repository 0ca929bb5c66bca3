#!/usr/bin/env bash
# Create .venv in the repo root with the whole OpenMMLab stack and repnext_mm installed (editable).
#
# Idempotent: when the requirement files are unchanged since the last successful run and the stack
# imports, it finishes in seconds. pip's wheel cache keeps the slow mmcv build for later runs.
#
# Why the environment juggling (see docs/troubleshooting.md):
#   * This machine's pip config and PIP_FIND_LINKS point at a local torch-2.13.0+cpu build that the
#     registry's torchvision cannot load with, so every pip call ignores them.
#   * mmcv 2.1.0 has no wheel for torch 2.13: it is compiled from the sdist with its C++ ops, which
#     needs torch installed first and setuptools<70 (its setup.py imports pkg_resources).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPNEXT_VENV:-$ROOT/.venv}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
STAMP="$VENV/.repnext_mm_setup_stamp"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

log() { printf '[setup_env %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

pip_() {
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$VENV/bin/python" -m pip "$@"
}

stamp_value() {
  cat "$CONSTRAINTS" "$ROOT/requirements/runtime.txt" "$ROOT/setup.py" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

stack_imports() {
  "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import torch, torchvision, mmcv, mmengine, mmdet, mmseg, mmpretrain, repnext_mm
from mmcv.ops import nms, roi_align  # the compiled ops Mask R-CNN needs
PY
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_value)" ]] && stack_imports; then
  log "environment at $VENV is up to date"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi

log "step 1/4: torch + torchvision (registry build, pinned)"
pip_ install -q -c "$CONSTRAINTS" torch torchvision setuptools wheel

# The compile's progress, one line per finished object: ninja numbers them "[k/N]". A cached
# wheel prints none of these and installs in seconds.
show_build_progress() {
  awk -v start="$(date +%s)" '
    match($0, /\[[0-9]+\/[0-9]+\]/) {
      split(substr($0, RSTART + 1, RLENGTH - 2), n, "/"); done = n[1] - 1; total = n[2]
      elapsed = systime() - start
      eta = done > 0 ? sprintf(", about %d min left", elapsed / done * (total - done) / 60 + 0.5) : ""
      printf "[setup_env] mmcv: compiling object %d of %d (%d min %02d s%s)\n", n[1], total, elapsed / 60, elapsed % 60, eta
      fflush()
    }
    /Using cached mmcv|Successfully (built|installed)/ { print "[setup_env] mmcv: " $0; fflush() }'
}

if "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" >/dev/null 2>&1; then
  log "step 2/4: mmcv 2.1.0 with ops already installed"
else
  # GNU nproc honours OMP_NUM_THREADS (1 under tools/run_demo.sh's training setting): count
  # the cores the compiler may use without OpenMP's variables.
  jobs="${MAX_JOBS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}"
  log "step 2/4: mmcv 2.1.0 with its C++ ops: pip's wheel cache, or compiled ONCE per machine" \
      "with $jobs jobs (about 5 min on 2 cores; the wheel is cached, later installs take seconds)"
  # mmcv's setup.py imports pkg_resources and needs setuptools<70, but torch requires >=77: the
  # old setuptools goes into a folder of its own that only the build's PYTHONPATH sees, so the
  # environment never holds a conflicting pair (and pip prints no resolver ERROR). ninja: parallel,
  # numbered compile jobs (without it, torch's extension builder compiles one file at a time).
  build_tools="$VENV/.mmcv_build_setuptools"
  rm -rf "$build_tools"
  # --no-warn-conflicts: the folder is not part of the environment, so the resolver's report on
  # the environment's torch (setuptools>=77) against it would be wrong.
  pip_ install -q --no-warn-conflicts --target "$build_tools" "setuptools<70"
  pip_ install -q -c "$CONSTRAINTS" ninja
  build_log="$VENV/mmcv_build.log"
  # CFLAGS is appended after Python's own "-g -O3": -g0 drops the debug info of every torch
  # header (about 3x faster per object, 70x smaller objects); the ops keep -O3.
  if ! PYTHONPATH="$build_tools" CFLAGS="${MMCV_CFLAGS:--g0}" MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$jobs" \
      pip_ install -v --no-build-isolation -c "$CONSTRAINTS" mmcv==2.1.0 2>&1 \
      | tee "$build_log" | show_build_progress; then
    log "ERROR: installing mmcv failed; the last lines of $build_log:"
    tail -n 30 "$build_log"
    exit 1
  fi
  rm -rf "$build_tools"
fi

log "step 3/4: OpenMMLab libraries, deploy and test tools"
pip_ install -q -c "$CONSTRAINTS" setuptools -r "$ROOT/requirements/runtime.txt"

log "step 4/4: repnext_mm (editable)"
pip_ install -q -c "$CONSTRAINTS" --no-build-isolation --no-deps -e "$ROOT"

if ! stack_imports; then
  log "ERROR: the stack does not import after installation; run: $VENV/bin/python -c 'import mmcv.ops'"
  exit 1
fi
stamp_value > "$STAMP"
log "done: $("$VENV/bin/python" -c 'import torch, mmcv, mmdet, mmseg, mmpretrain; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}")')"
