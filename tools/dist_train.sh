#!/usr/bin/env bash
# Multi-process training with torchrun:
#   tools/dist_train.sh CONFIG NPROC [train.py args...]
#
# NPROC processes on this node; tools/dist_launch.sh says which environment variables it reads
# (NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON, OMP_NUM_THREADS).
set -euo pipefail

[[ $# -ge 2 ]] || { echo "usage: $0 CONFIG NPROC [train.py args...]" >&2; exit 2; }
CONFIG=$1
NPROC=$2
shift 2
exec bash "$(dirname "${BASH_SOURCE[0]}")/dist_launch.sh" "$NPROC" train.py \
  "$CONFIG" --launcher pytorch "$@"
