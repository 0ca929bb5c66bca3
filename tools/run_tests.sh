#!/usr/bin/env bash
# The README's test command: installs the stack into .venv if needed, then runs the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
# One pytest process per core (pytest-xdist), whole test files to a process so that a file's
# module-scoped fixture (one training run shared by its tests) runs once. "-n 0" (later
# arguments win) runs everything in this process. nproc --all: plain nproc follows OMP_NUM_THREADS.
exec .venv/bin/python -m pytest -n "$(nproc --all)" --dist loadfile "$@"
