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
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from repnext_mm.cli import (ArgumentParser, add_cfg_options_argument,  # noqa: E402
                            add_unsafe_unpickle_argument, run_cli)
from repnext_mm.visualization.cam import (FEATURE_SCORES, IMAGE_SUFFIXES, METHODS,  # noqa: E402
                                          CAMResult)


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


def collect_images(entries: list[str]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in named folders."""
    from repnext_mm.visualization.cam import CAMError

    images: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CAMError(f'folder {path} holds no image ({", ".join(IMAGE_SUFFIXES)})')
            images.extend(found)
        elif path.is_file():
            images.append(path)
        else:
            raise CAMError(f'image {path} does not exist; pass image files or folders')
    return images


def output_paths(images: list[Path], out: str | None) -> list[Path]:
    """Where each overlay goes: ``--out`` itself for one image, else ``<folder>/<stem>_cam.png``.

    ``--out`` is a folder if it is an existing folder, ends in a path separator or has no
    suffix; otherwise it is one image file, and its suffix must be an image format (so
    ``--out x.txt`` is refused instead of becoming a folder named ``x.txt``). Only checks the
    paths; the folder is created by the first overlay written, so a run that writes nothing
    leaves nothing behind.
    """
    from repnext_mm.visualization.cam import CAMError, check_image_output

    if out is None:
        if len(images) == 1:
            return [Path(f'{images[0].stem}_cam.png')]
        folder = Path('vis_cam')
    else:
        out_path = Path(out)
        is_folder = out_path.is_dir() or out.endswith(('/', os.sep)) or not out_path.suffix
        if not is_folder:
            if out_path.suffix.lower() not in IMAGE_SUFFIXES:
                raise CAMError(f'--out {out} is neither an image file nor a folder: '
                               f'{out_path.suffix!r} is not an image suffix. Pass an image name '
                               f'({", ".join(IMAGE_SUFFIXES)}) for one image, or a folder (a name '
                               'without a suffix, or ending in "/")')
            if len(images) > 1:
                raise CAMError(f'--out {out_path} is one image file but {len(images)} images were '
                               'given; pass a folder to --out')
            if not out_path.parent.is_dir():
                raise CAMError(f'the folder of --out ({out_path.parent}) does not exist; create '
                               'it')
            return [check_image_output(out_path)]
        folder = out_path
    if folder.exists() and not folder.is_dir():
        raise CAMError(f'--out {folder} exists and is not a folder')
    paths = [folder / f'{image.stem}_cam.png' for image in images]
    if len(set(paths)) != len(paths):
        raise CAMError('two input images share a file name; their overlays would overwrite each '
                       'other - run the folders separately')
    return paths


def describe(result: CAMResult, image: Path, out: Path) -> str:
    """One summary line per image."""
    text = (f'{image} -> {out}: {result.method} of {result.target} on '
            f'{", ".join(result.target_layers)} (score {result.score:.4g}, input '
            f'{result.input_size[0]}x{result.input_size[1]})')
    if result.probabilities is not None and result.category is not None:
        text += f', p={result.probabilities[result.category]:.3f}'
    if result.empty:
        text += ('; warning: the map is empty (no positive evidence for this target at this '
                 'layer); try another layer, category or method')
    return text


def run(args: argparse.Namespace) -> list[str]:
    from repnext_mm.visualization.cam import (CAMError, CAMVisualizer, UnreadableImageError,
                                              all_layer_names, cam_method_class,
                                              feature_layer_summary, load_image, overlay,
                                              save_image)

    cam_method_class(args.method)  # unknown method / missing grad-cam: fail before model loading
    if not 0.0 <= args.image_weight <= 1.0:
        raise CAMError(f'--image-weight must be in [0, 1], got {args.image_weight}')
    if not args.list_layers and not args.images:
        raise CAMError('pass at least one IMAGE (or --list-layers to see the layer names)')
    images = collect_images(args.images) if not args.list_layers else []
    outs = output_paths(images, args.out) if images else []
    checkpoint = None if args.checkpoint.lower() == 'none' else args.checkpoint
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CAMError(f'checkpoint {checkpoint} does not exist; pass a .pth file, or "none" for '
                       'random weights')

    visualizer = CAMVisualizer.from_config(
        args.config, checkpoint, fuse=args.fuse, cfg_options=args.cfg_options,
        input_size=tuple(args.input_size) if args.input_size else None, device=args.device,
        unsafe_full_unpickle=args.unsafe_full_unpickle)
    for note in visualizer.notes:
        print(f'note: {note}')
    if args.list_layers:
        print('feature-map layers (same names in the training and the fused form):')
        print('\n'.join(f'  {line}' for line in feature_layer_summary(visualizer.model)))
        print('every module:')
        print('\n'.join(f'  {line}' for line in all_layer_names(visualizer.model)))
        return []

    bar = None
    if len(images) > 1:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(images))
    lines, skipped = [], []
    for image_path, out_path in zip(images, outs):
        try:
            image = load_image(image_path)
        except UnreadableImageError as error:
            if len(images) == 1:
                raise
            # One bad file in a folder should not cost the maps of all the others.
            skipped.append(error)
        else:
            result = visualizer.compute(image, args.target_layers, args.method,
                                        args.target_category, feature_score=args.feature_score,
                                        eigen_smooth=args.eigen_smooth,
                                        aug_smooth=args.aug_smooth)
            save_image(overlay(image, result.cam, args.image_weight), out_path)
            lines.append(describe(result, image_path, out_path))
        if bar is not None:
            bar.update()
    if bar is not None:
        print()
    if skipped and not lines:
        first = skipped[0]
        more = f' (and {len(skipped) - 1} more)' if len(skipped) > 1 else ''
        raise CAMError(f'none of the {len(images)} images could be read: {first.path} '
                       f'{first.reason}{more}; nothing was written')
    for line in lines:
        print(line)
    for error in skipped:
        print(f'warning: skipped {error.path}: it {error.reason}', file=sys.stderr)
    if skipped:
        print(f'warning: skipped {len(skipped)} of {len(images)} images; wrote the other '
              f'{len(lines)}', file=sys.stderr)
    return lines


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == '__main__':
    sys.exit(run_cli(main))
