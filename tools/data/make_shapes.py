"""Generates the synthetic "shapes" data set in real COCO, ADE20K and ImageNet layouts.

Writes data/shapes/{coco,ade,imagenet}/ and a manifest (layout and classes:
repnext_mm/datasets/make_shapes.py). Objects have random textures, colour noise and rotations on
random backgrounds with clutter lines; 80% of them take their hue from a band of their class, so
that networks trained from scratch learn within minutes on a CPU.

Usage::

    python tools/data/make_shapes.py                  # data/shapes, seed 0, 200 train / 50 val
    python tools/data/make_shapes.py --root /tmp/shapes --num-train 40 --num-val 10 --seed 3

A second run with the same parameters finds the manifest and returns at once; other parameters
(or a missing file) regenerate the data. The same seed gives byte-identical files.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from repnext_mm.cli import ArgumentParser, run_cli
from repnext_mm.datasets.make_shapes import MANIFEST_NAME, ShapesSpec, make_shapes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ShapesSpec()
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--root', default='data/shapes', help='output folder')
    parser.add_argument('--seed', type=int, default=defaults.seed)
    parser.add_argument('--num-train', type=int, default=defaults.num_train,
                        help='training images per data set (COCO, ADE, ImageNet)')
    parser.add_argument('--num-val', type=int, default=defaults.num_val,
                        help='validation images per data set')
    parser.add_argument('--img-size', type=int, default=defaults.img_size,
                        help='side of the COCO and ADE images')
    parser.add_argument('--cls-img-size', type=int, default=defaults.cls_img_size,
                        help='side of the ImageNet-style images')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if up to date; allow replacing a foreign root')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = ShapesSpec(**{f.name: getattr(args, f.name) for f in fields(ShapesSpec)})
    if not make_shapes(args.root, spec, force=args.force, progress=not args.quiet):
        print(f'{args.root} is up to date ({MANIFEST_NAME} matches); pass --force to regenerate')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
