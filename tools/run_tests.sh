#!/usr/bin/env bash
# The README's test command: installs the stack into .venv if needed, then runs the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
exec .venv/bin/python -m pytest "$@"
