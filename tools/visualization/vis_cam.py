#!/usr/bin/env python
"""Grad-CAM class activation maps of a RepNeXt classifier, detector, segmentor or backbone.

Examples:
    # the predicted class of a classifier, on the last stage (default), written as cam.png
    python tools/visualization/vis_cam.py configs/mmpretrain/repnext_m0_shapes.py \\
        work_dirs/repnext_m0_shapes/epoch_10.pth data/shapes/imagenet/val/star/000002.png \\
        --out cam.png

    # class 3 with Grad-CAM++ on the third stage, on the fused model
    python tools/visualization/vis_cam.py CONFIG CHECKPOINT image.png --target-category 3 \\
        --method gradcam++ --target-layers backbone.stages.2 --fuse

    # a detector's backbone, every image of a folder, into vis_cam/
    python tools/visualization/vis_cam.py configs/mmdet/mask_rcnn_repnext_m4_fpn_1x_coco.py \\
        CHECKPOINT images/ --out vis_cam/

What is explained: for a classifier, the logit of --target-category (default: the predicted
class). A detector, segmentor or bare backbone has no class score; the explained score is the
energy mean(F**2) of the backbone's deepest output feature map F, or with --target-category N
that of its channel N (--feature-score mean: the plain mean instead, which is often negative
for these signed features and then gives an empty map).

The image is resized (not cropped) to the model input: the classifier config's test crop size,
or for dense models the image's own aspect ratio (shrunk to at most 1333x800, rounded up to a
multiple of 32); --input-size H W overrides both. The map is drawn over the original image at
its own size.

CHECKPOINT may be a training checkpoint, a fused one (tools/deploy/reparameterize.py) or the
word "none" (random weights: only useful to try the tool). Target layer names are the same in
both forms (backbone.stages.3, backbone.stages.2.blocks.8, ...); --list-layers prints them all.
"""
from __future__ import annotations

import argparse
import sys

from repnext_mm.cli import (ArgumentParser, add_cfg_options_argument,
                            add_unsafe_unpickle_argument, run_cli)
from repnext_mm.visualization.cam import FEATURE_SCORES, METHODS
from repnext_mm.visualization.cam_batch import CAMRunSettings, run_cam


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                            epilog='\n\n'.join(__doc__.split('\n\n')[1:]),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='mmpretrain, mmdet or mmseg config')
    parser.add_argument('checkpoint', help='training or fused checkpoint, or "none" for random '
                                           'weights')
    parser.add_argument('images', nargs='*', metavar='IMAGE',
                        help='image files, or folders whose images are all processed')
    parser.add_argument('--target-layers', nargs='+', metavar='NAME',
                        help='modules whose output the map is computed on (default: the last '
                             'backbone stage, backbone.stages.3); several are averaged')
    parser.add_argument('--method', default='gradcam', type=str.lower,
                        help=f'one of {", ".join(METHODS)} (default gradcam)')
    parser.add_argument('--target-category', type=int, metavar='N',
                        help='classifier: class to explain (default: the predicted one); other '
                             'models: channel of the deepest backbone output (default: all)')
    parser.add_argument('--feature-score', choices=FEATURE_SCORES, default='energy',
                        help='detectors, segmentors, backbones: score of the deepest backbone '
                             'output to explain (default energy = mean of squares)')
    parser.add_argument('--out', help='output image (.png/.jpg) for one input image, or a '
                                      'folder: an existing one, a name without a suffix or one '
                                      'ending in "/" (default: IMAGE_cam.png here for one '
                                      'image, vis_cam/ for several)')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='model input size (default: see below)')
    parser.add_argument('--fuse', action='store_true',
                        help='reparameterize the model first (maps equal the training form)')
    parser.add_argument('--image-weight', type=float, default=0.5,
                        help='weight of the image in the overlay, 0..1 (default 0.5)')
    parser.add_argument('--eigen-smooth', action='store_true',
                        help='first principal component of the weighted activations (less noise)')
    parser.add_argument('--aug-smooth', action='store_true',
                        help='average over flips and brightness changes (6x slower)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N] (default cpu)')
    parser.add_argument('--list-layers', action='store_true',
                        help='print the valid target layer names of the model and exit')
    add_cfg_options_argument(parser)
    add_unsafe_unpickle_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run_cam(CAMRunSettings(**vars(parse_args(argv))))


if __name__ == '__main__':
    sys.exit(run_cli(main))
