#!/usr/bin/env bash
# Multi-process training with torchrun:
#   tools/dist_train.sh CONFIG NPROC [train.py args...]
#
# NPROC processes on this node (one per GPU; without CUDA, CPU processes talking over gloo).
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT. PYTHON picks the interpreter (default:
# python). Each process uses OMP_NUM_THREADS threads (default: cores / NPROC).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG NPROC [train.py args...]" >&2
  exit 2
fi
CONFIG=$1
NPROC=$2
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
  "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
