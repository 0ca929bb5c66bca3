"""Fuse a trained RepNeXt classifier / detector / segmentor checkpoint for deployment.

Example:
    python tools/deploy/reparameterize.py configs/mmdet/mask_rcnn_repnext_m4_fpn_1x_coco.py \\
        work_dirs/mask_rcnn_repnext_m4/epoch_12.pth mask_rcnn_repnext_m4_fused.pth

Every reparameterizable module (the RepNeXt backbone, the RepNeXt classifier head) is switched
to its deploy form; the original and fused models are run on the same input and the fused
checkpoint is only written (atomically) if their outputs agree. The printed ``--cfg-options``
build the fused structure from the same config, e.g. for ``tools/test.py``.
"""
from __future__ import annotations

import argparse
import sys

from repnext_mm.cli import (ArgumentParser, add_cfg_options_argument,
                            add_unsafe_unpickle_argument, run_cli)
from repnext_mm.deploy.verify import RELATIVE_TOLERANCE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='training checkpoint (.pth)')
    parser.add_argument('out', help='fused checkpoint to write')
    parser.add_argument('--force', action='store_true', help='overwrite OUT if it exists')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='verification input size (default 224 224 for classifiers, else 512 512)')
    parser.add_argument('--tolerance', type=float, default=RELATIVE_TOLERANCE,
                        help='largest accepted relative output difference (default %(default)g)')
    parser.add_argument('--ema', action='store_true',
                        help="fuse the EMA weights ('ema_state_dict') instead of 'state_dict'")
    add_unsafe_unpickle_argument(parser)
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from repnext_mm.deploy.reparameterize import reparameterize_checkpoint

    result = reparameterize_checkpoint(
        args.config, args.checkpoint, args.out, force=args.force, shape=args.shape,
        cfg_options=args.cfg_options, tolerance=args.tolerance, use_ema=args.ema,
        unsafe_full_unpickle=args.unsafe_full_unpickle)
    for note in result.notes:
        print(f'note: {note}')
    print(f'wrote {result.out} ({result.task}, arch {result.arch or "custom"}, fused: '
          f'{", ".join(result.fused_modules)})')
    print(f'evaluate it with: python tools/test.py {args.config} {args.out}')
    print(f'  (tools/test.py reads the fused structure from the checkpoint; elsewhere build it '
          f'with --cfg-options {result.cfg_options_string})')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
