#!/usr/bin/env bash
# The torchrun launcher behind tools/dist_train.sh and tools/dist_test.sh:
#   tools/dist_launch.sh NPROC SCRIPT [SCRIPT args...]
#
# Runs tools/SCRIPT in NPROC processes on this node (one per GPU; without CUDA, CPU processes
# talking over gloo). Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT. PYTHON picks the
# interpreter (default: python). Each process uses OMP_NUM_THREADS threads (default: cores / NPROC).
set -euo pipefail

[[ $# -ge 2 ]] || { echo "usage: $0 NPROC SCRIPT [SCRIPT args...]" >&2; exit 2; }
NPROC=$1
SCRIPT=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( ($(nproc) + NPROC - 1) / NPROC ))}

exec "$PYTHON" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
  --nproc_per_node="$NPROC" --master_port="$PORT" \
  "$TOOLS/$SCRIPT" "$@"
