#!/usr/bin/env bash
# Multi-process evaluation with torchrun:
#   tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]
#
# NPROC processes on this node; tools/dist_launch.sh says which environment variables it reads
# (NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON, OMP_NUM_THREADS).
set -euo pipefail

[[ $# -ge 3 ]] || { echo "usage: $0 CONFIG CHECKPOINT NPROC [test.py args...]" >&2; exit 2; }
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
exec bash "$(dirname "${BASH_SOURCE[0]}")/dist_launch.sh" "$NPROC" test.py \
  "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
