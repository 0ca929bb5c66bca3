#!/usr/bin/env bash
# End-to-end demo on CPU: environment, synthetic data, Mask R-CNN with a RepNeXt-M0 backbone
# trained and evaluated with COCO box and mask AP (pycocotools, through mmdet's CocoMetric).
#
#   tools/run_demo.sh [extra tools/train.py args, e.g. --cfg-options train_cfg.max_epochs=2]
#
# Steps: tools/setup_env.sh (.venv; seconds when it is up to date), the shapes data set
# (tools/data/make_shapes.py; a no-op when present), training (tools/train.py), then
# tools/test.py on the final checkpoint: COCO AP, and the validation images drawn with the
# predicted boxes and masks beside the ground truth (--show-dir). About 11 minutes on a 2-core
# CPU once the environment exists. WORK_DIR overrides the output folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${REPNEXT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
CONFIG=configs/mmdet/mask_rcnn_repnext_m0_fpn_shapes.py
WORK_DIR="${WORK_DIR:-work_dirs/demo_mask_rcnn_repnext_m0_shapes}"
STARTED=$SECONDS
# Training and testing run as 2 processes (tools/dist_train.sh over gloo) of 2 images each, the
# config's batch of 4, where the machine has 2 cores or more: processes scale on a CPU where the
# threads of one process do not. With OpenMP threads, every parallel region waits for the slowest
# thread, and on a small shared machine a thread spin-waits whenever another process wants its
# core (a training step became several times slower). So each process gets cores / 2 threads,
# and only these steps: the install must keep every core. DEMO_PROCS=1 trains in one process.
CORES="$(nproc --all)"  # not plain nproc: it follows OMP_NUM_THREADS
PROCS="${DEMO_PROCS:-$(( CORES >= 2 ? 2 : 1 ))}"
THREADS="${OMP_NUM_THREADS:-$(( CORES / PROCS > 1 ? CORES / PROCS : 1 ))}"
case "$PROCS" in
  1|2|4) ;;
  *) echo "run_demo.sh: error: DEMO_PROCS=$PROCS; use 1, 2 or 4 (they share the batch of 4 images)" >&2
     exit 2 ;;
esac

log() { printf '\n[run_demo %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
elapsed() { echo "$(( (SECONDS - $1) / 60 )) min $(( (SECONDS - $1) % 60 )) s"; }

log "1/4 environment ($VENV)"
bash tools/setup_env.sh

log "2/4 synthetic shapes data (data/shapes; COCO layout under data/shapes/coco)"
"$PY" tools/data/make_shapes.py --quiet

log "3/4 training Mask R-CNN + RepNeXt-M0 on shapes ($CONFIG -> $WORK_DIR)"
STEP=$SECONDS
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# No validation during training: step 4 evaluates the same checkpoint, and draws it too.
TRAIN_OPTIONS=(randomness.seed=0 train_cfg.val_interval=1000000
               "train_dataloader.batch_size=$(( 4 / PROCS ))")
log "$PROCS process(es) x $(( 4 / PROCS )) images, $THREADS thread(s) each"
if (( PROCS > 1 )); then
  PYTHON="$PY" PORT="$(free_port)" OMP_NUM_THREADS="$THREADS" bash tools/dist_train.sh "$CONFIG" "$PROCS" \
    --work-dir "$WORK_DIR" --cfg-options "${TRAIN_OPTIONS[@]}" "$@"
else
  OMP_NUM_THREADS="$THREADS" "$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" \
    --cfg-options "${TRAIN_OPTIONS[@]}" "$@"
fi
log "training took $(elapsed $STEP)"

CHECKPOINT="$(cat "$WORK_DIR/last_checkpoint")"
SHOW_DIR="$(cd "$WORK_DIR" && pwd)/predictions"
log "4/4 evaluating $CHECKPOINT with tools/test.py (pictures: $SHOW_DIR)"
STEP=$SECONDS
rm -rf "$SHOW_DIR"  # only this run's pictures
# One process (in a multi-process test only rank 0 writes its share of the pictures), so it
# gets every core's thread.
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$CORES}" "$PY" tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK_DIR" \
  --show-dir "$SHOW_DIR" | tee "$WORK_DIR/test_output.txt"
log "evaluation took $(elapsed $STEP)"

"$PY" - "$WORK_DIR/test_output.txt" <<'PY'
import json
import sys

line = [l for l in open(sys.argv[1]) if l.startswith('test metrics: ')][-1]
metrics = json.loads(line[len('test metrics: '):])
print('\nCOCO AP (pycocotools) of Mask R-CNN + RepNeXt-M0 on the shapes validation set:')
for task in ('bbox', 'segm'):
    values = '  '.join(f'{name} {metrics[f"coco/{task}_{name}"]:.3f}'
                       for name in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l'))
    print(f'  {task:4s}: {values}')
PY
echo
echo "Validation images with the predictions (right; score >= 0.3) beside the ground truth (left):"
find "$SHOW_DIR" -name '*.png' -o -name '*.jpg' | sort | head -n 6 | sed 's/^/  /'
echo "  ... $(find "$SHOW_DIR" -type f | wc -l) images in $SHOW_DIR"
log "demo finished in $(elapsed $STARTED); logs and checkpoints in $WORK_DIR"
