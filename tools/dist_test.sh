#!/usr/bin/env bash
# Multi-process evaluation with torchrun:
#   tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]
#
# NPROC processes on this node; tools/dist_launch.sh says which environment variables it reads
# (NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON, OMP_NUM_THREADS). CONFIG, CHECKPOINT (unless a
# URL) and NPROC are checked before torchrun starts (one "error:" line, exit status 2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/dist_common.sh"
USAGE="$0 CONFIG CHECKPOINT NPROC [test.py args...]"

[[ $# -ge 3 ]] || die "expected CONFIG, CHECKPOINT and NPROC; usage: $USAGE"
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
require_positive_int NPROC "$NPROC"
require_file CONFIG "$CONFIG"
is_url "$CHECKPOINT" || require_file CHECKPOINT "$CHECKPOINT"
exec bash "$REPO_ROOT/tools/dist_launch.sh" "$NPROC" test.py \
  "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
