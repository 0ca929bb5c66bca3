#!/usr/bin/env python
"""Run a detector, segmentor or classifier on your image or folder and save the pictures.

Usage (mmdet's demo/image_demo.py convention)::

    python tools/infer.py INPUTS MODEL [--weights W] [--out-dir DIR] [--device cpu]
                          [--pred-score-thr 0.3] [--batch-size 1]

INPUTS is an image or a folder of images (its subfolders are not read). MODEL is a config file,
a model of the repnext_mm zoo (model-index.yml: the config files' names, e.g.
mask_rcnn_repnext_m4_fpn_1x_coco) or an mmpretrain model name; the config's default_scope picks
mmdet's DetInferencer, mmseg's MMSegInferencer or mmpretrain's ImageClassificationInferencer.
Without --weights the model's published weights are used (a name only). Pictures are written to
DIR/vis, predictions to DIR/preds (JSON; label PNGs for segmentation). The work is done by
:func:`repnext_mm.inference.infer.infer`.
"""
from __future__ import annotations

import sys
from typing import Sequence

from repnext_mm.cli import ArgumentParser, run_cli


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog='tools/infer.py',
        description='Run a detector, segmentor or classifier on an image or a folder of images '
                    'and write the pictures with the predictions drawn (the config\'s '
                    'default_scope selects the library).')
    parser.add_argument('inputs', help='an image, or a folder of images')
    parser.add_argument('model', help='config file, repnext_mm zoo name (model-index.yml, e.g. '
                        'mask_rcnn_repnext_m0_fpn_shapes) or mmpretrain model name')
    parser.add_argument('--weights', help='checkpoint file or URL (default: the published weights '
                        'of a zoo or mmpretrain name)')
    parser.add_argument('--out-dir', default='outputs',
                        help='folder for vis/ (pictures) and preds/ (predictions); '
                        'default: outputs')
    parser.add_argument('--device', help='cpu, cuda, cuda:1, ... (default: cuda if available, '
                        'else cpu)')
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='detection: draw boxes scoring at least this (default 0.3)')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from repnext_mm.inference.infer import infer

    args = build_parser().parse_args(argv)
    result = infer(args.inputs, args.model, weights=args.weights, out_dir=args.out_dir,
                   device=args.device, pred_score_thr=args.pred_score_thr,
                   batch_size=args.batch_size)
    # A new line first: the Inferencers' progress bars do not all end theirs.
    print(f'\n{result.task}: {len(result.images)} image(s), {result.model.config} with '
          f'{result.weights}')
    for what, files in (('pictures', result.pictures), ('predictions', result.predictions)):
        if files:
            print(f'{what}: {files[0].parent} ({len(files)} files)')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
