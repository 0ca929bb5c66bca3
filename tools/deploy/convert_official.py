"""Convert the authors' RepNeXt classification checkpoint to this package's layout.

Examples:
    # mmpretrain classifier checkpoint (backbone + distillation head) for
    # configs/mmpretrain/repnext_m1_8xb256_in1k.py
    python tools/deploy/convert_official.py repnext_m1_distill_300e.pth repnext_m1_in1k.pth

    # backbone weights for init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')
    python tools/deploy/convert_official.py repnext_m4_distill_300e.pth repnext_m4_backbone.pth \\
        --task backbone

The file is read with ``torch.load(weights_only=True)``; its ``args`` entry (an
``argparse.Namespace``) is allow-listed explicitly. Nothing is written unless every source key
is mapped (or dropped for a stated reason) and every shape matches the detected arch.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from repnext_mm.cli import ArgumentParser, add_unsafe_unpickle_argument, run_cli  # noqa: E402
from repnext_mm.models.backbones.repnext import RepNeXt  # noqa: E402

ARCHS = ('auto', *RepNeXt.arch_settings)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help="authors' checkpoint, e.g. repnext_m1_distill_300e.pth")
    parser.add_argument('dst', help='converted checkpoint to write')
    parser.add_argument('--task', choices=('cls', 'backbone'), default='cls',
                        help="'cls': backbone. + head. keys for our classifier config; 'backbone': "
                             "backbone. keys only, for init_cfg Pretrained (default %(default)s)")
    parser.add_argument('--arch', choices=ARCHS, default='auto',
                        help='expected arch; auto detects it from the shapes (default %(default)s)')
    parser.add_argument('--weights', choices=('model', 'model_ema'), default='model',
                        help='which weights of the checkpoint to convert (default %(default)s)')
    parser.add_argument('--force', action='store_true', help='overwrite DST if it exists')
    add_unsafe_unpickle_argument(parser, 'SRC')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from repnext_mm.deploy.convert import convert_official_checkpoint

    result, unused = convert_official_checkpoint(
        args.src, args.dst, task=args.task, arch=args.arch, weights=args.weights,
        force=args.force, unsafe_full_unpickle=args.unsafe_full_unpickle)
    print(f'RepNeXt-{result.arch.upper()} ({args.weights}): {len(result.mapped)} weights mapped, '
          f'{len(result.dropped)} dropped' + (f', {result.num_classes} classes' if
                                               result.num_classes else ''))
    for key, reason in result.dropped.items():
        print(f'  dropped {key}: {reason}')
    if unused:
        print(f'not converted (training state): {", ".join(unused)}')
    print(f'wrote {args.dst}')
    if args.task == 'backbone':
        print(f"use it with: init_cfg=dict(type='Pretrained', checkpoint='{args.dst}', "
              "prefix='backbone.')")
    else:
        print(f'evaluate it with: python tools/test.py '
              f'configs/mmpretrain/repnext_{result.arch}_8xb256_in1k.py {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
