#!/usr/bin/env bash
# Multi-process training with torchrun:
#   tools/dist_train.sh CONFIG NPROC [train.py args...]
#
# NPROC processes on this node; tools/dist_launch.sh says which environment variables it reads
# (NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON, OMP_NUM_THREADS). CONFIG and NPROC are checked
# before torchrun starts (one "error:" line, exit status 2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/dist_common.sh"
USAGE="$0 CONFIG NPROC [train.py args...]"

[[ $# -ge 2 ]] || die "expected CONFIG and NPROC; usage: $USAGE"
CONFIG=$1
NPROC=$2
shift 2
require_positive_int NPROC "$NPROC"
require_file CONFIG "$CONFIG"
exec bash "$REPO_ROOT/tools/dist_launch.sh" "$NPROC" train.py "$CONFIG" --launcher pytorch "$@"
