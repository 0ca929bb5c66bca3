#!/usr/bin/env bash
# End-to-end demo on CPU: environment, synthetic data, Mask R-CNN with a RepNeXt-M0 backbone
# trained and evaluated with COCO box and mask AP (pycocotools, through mmdet's CocoMetric).
#
#   tools/run_demo.sh [extra tools/train.py args, e.g. --cfg-options train_cfg.max_epochs=2]
#
# Steps: tools/setup_env.sh (.venv; seconds when it is up to date), the shapes data set
# (tools/data/make_shapes.py; a no-op when present), training with evaluation after the last
# epoch (tools/train.py), then tools/test.py on the final checkpoint. About 5-10 minutes on a
# CPU once the environment exists. WORK_DIR overrides the output folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${REPNEXT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
CONFIG=configs/mmdet/mask_rcnn_repnext_m0_fpn_shapes.py
WORK_DIR="${WORK_DIR:-work_dirs/demo_mask_rcnn_repnext_m0_shapes}"
STARTED=$SECONDS
# One OpenMP thread for training and testing unless told otherwise: on a small shared machine a
# second thread spin-waits whenever another process wants the core, which makes a training step
# several times slower. Only those steps get it: the install must keep every core.
THREADS="${OMP_NUM_THREADS:-1}"

log() { printf '\n[run_demo %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
elapsed() { echo "$(( (SECONDS - $1) / 60 )) min $(( (SECONDS - $1) % 60 )) s"; }

log "1/4 environment ($VENV)"
bash tools/setup_env.sh

log "2/4 synthetic shapes data (data/shapes; COCO layout under data/shapes/coco)"
"$PY" tools/data/make_shapes.py --quiet

log "3/4 training Mask R-CNN + RepNeXt-M0 on shapes ($CONFIG -> $WORK_DIR)"
STEP=$SECONDS
OMP_NUM_THREADS="$THREADS" "$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" --cfg-options randomness.seed=0 "$@"
log "training and its evaluation took $(elapsed $STEP)"

CHECKPOINT="$(cat "$WORK_DIR/last_checkpoint")"
log "4/4 evaluating $CHECKPOINT with tools/test.py"
STEP=$SECONDS
OMP_NUM_THREADS="$THREADS" "$PY" tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK_DIR" | tee "$WORK_DIR/test_output.txt"
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
log "demo finished in $(elapsed $STARTED); logs and checkpoints in $WORK_DIR"
