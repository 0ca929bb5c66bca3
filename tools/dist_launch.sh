#!/usr/bin/env bash
# The torchrun launcher behind tools/dist_train.sh and tools/dist_test.sh:
#   tools/dist_launch.sh NPROC SCRIPT [SCRIPT args...]
#
# Runs tools/SCRIPT in NPROC processes on this node (one per GPU; without CUDA, CPU processes
# talking over gloo). Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT. PYTHON picks the
# interpreter (default: the repository's .venv from tools/setup_env.sh, else python3). Each process
# uses OMP_NUM_THREADS threads (default: cores / NPROC). Arguments, environment and interpreter are
# checked first (tools/lib/dist_common.sh): a bad one is one "error:" line and exit status 2.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/dist_common.sh"
USAGE=${USAGE:-"$0 NPROC SCRIPT [SCRIPT args...]"}

[[ $# -ge 2 ]] || die "expected NPROC and SCRIPT; usage: $USAGE"
NPROC=$1
SCRIPT=$2
shift 2
TOOLS="$REPO_ROOT/tools"
require_positive_int NPROC "$NPROC"
require_file SCRIPT "$TOOLS/$SCRIPT"
check_launch_environment
find_python
# nproc --all: plain nproc follows OMP_NUM_THREADS.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( ($(nproc --all) + NPROC - 1) / NPROC ))}

exec "$PYTHON" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
  --nproc_per_node="$NPROC" --master_port="$PORT" \
  "$TOOLS/$SCRIPT" "$@"
