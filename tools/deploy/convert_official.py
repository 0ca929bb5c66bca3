"""Convert a checkpoint the RepNeXt authors released to this package's layout.

Recognizes the file by its content, says what it found and which config to use, and writes a
checkpoint that loads strictly into that config:

    ImageNet classifiers: repnext_mX_distill_300e.pth, repnext_mX_sz224_*.pth.tar (timm)
        -> configs/mmpretrain/repnext_mX_8xb256_in1k.py
    Mask R-CNN (mmdet 2.28): repnext_mX_coco.pth
        -> configs/mmdet/mask_rcnn_repnext_mX_fpn_1x_coco.py
    Semantic FPN (mmseg 0.30): repnext_mX_ade20k.pth
        -> configs/mmseg/fpn_repnext_mX_8xb4-40k_ade20k-512x512.py
    fused TorchScript classifier: repnext_mX_distill_300e_fused.pt
        -> the mmpretrain config with model.backbone.deploy=True model.head.deploy=True

Examples:
    python tools/deploy/convert_official.py repnext_m4_coco.pth checkpoints/repnext_m4_coco.pth
    # backbone weights for init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')
    python tools/deploy/convert_official.py repnext_m4_distill_300e.pth \\
        checkpoints/repnext_m4_in1k_backbone.pth --task backbone

Pickled files are read with ``torch.load(weights_only=True)`` (their ``args``, an
``argparse.Namespace``, is allow-listed); TorchScript files with ``torch.jit.load``, which
unpickles no Python objects. Every entry is converted or listed with the reason it is left out;
nothing is written unless the result fills the config's model exactly.
"""
from __future__ import annotations

import argparse
import sys

from repnext_mm.cli import ArgumentParser, add_unsafe_unpickle_argument, run_cli
from repnext_mm.models.backbones.repnext import RepNeXt

ARCHS = ('auto', *RepNeXt.arch_settings)
#: Earlier names of the --task and --weights values, still accepted.
OLD_NAMES = {'cls': 'model', 'model_ema': 'ema'}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('src', help='a file the authors released (any kind listed below)')
    parser.add_argument('dst', help='converted checkpoint to write')
    parser.add_argument('--task', choices=('model', 'backbone', 'cls'), default='model',
                        help="'model': the whole model, for the config the tool names; "
                             "'backbone': backbone. entries only, for init_cfg Pretrained "
                             '(default %(default)s)')
    parser.add_argument('--config', help='check the result against this config\'s model before '
                        'writing (same kind of model and arch; strict, class count included)')
    parser.add_argument('--arch', choices=ARCHS, default='auto',
                        help='expected arch; auto reads it off the weights (default %(default)s)')
    parser.add_argument('--weights', choices=('model', 'ema', 'model_ema'), default='model',
                        help="'ema': the EMA weights (model_ema / state_dict_ema) where the file "
                             'has them (default %(default)s)')
    parser.add_argument('--force', action='store_true', help='overwrite DST if it exists')
    add_unsafe_unpickle_argument(parser, 'SRC')
    args = parser.parse_args(argv)
    args.task, args.weights = (OLD_NAMES.get(v, v) for v in (args.task, args.weights))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from repnext_mm.deploy.convert import convert_official_checkpoint, describe

    report = convert_official_checkpoint(
        args.src, args.dst, task=args.task, arch=args.arch, weights=args.weights,
        config=args.config, force=args.force, unsafe_full_unpickle=args.unsafe_full_unpickle)
    print('\n'.join(describe(report)))
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
