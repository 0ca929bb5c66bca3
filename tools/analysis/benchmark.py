"""Latency / throughput of fused vs unfused RepNeXt models, with params and GMACs.

Examples:
    # the README table: M0-M5 backbones at 512x512, batch 1, torch and onnxruntime on this CPU
    python tools/analysis/benchmark.py --arch m0 m1 m2 m3 m4 m5 --shape 512 512 \\
        --backend torch onnxruntime --out benchmark_cpu.json

    # a trained segmentor's backbone
    python tools/analysis/benchmark.py configs/mmseg/fpn_repnext_m4_8xb4-40k_ade20k-512x512.py \\
        iter_40000.pth --shape 512 512 --backbone-only --backend torch

    # the paper's GPU throughput protocol (fused fp32, 224x224, largest power-of-two batch)
    python tools/analysis/benchmark.py configs/mmpretrain/repnext_m1_8xb256_in1k.py --backend cuda

    # whole detector images/s over the config's test set (like mmdet's benchmark tool)
    python tools/analysis/benchmark.py configs/mmdet/mask_rcnn_repnext_m4_fpn_1x_coco.py ckpt.pth \\
        --dataset --max-iter 200

Timing: WARMUP untimed runs, then RUNS timed runs; the median and the inter-quartile range (IQR)
are reported. "unfused" is the same weights in the training structure (every SRP branch and
BatchNorm separate).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from mmengine.config import DictAction  # noqa: E402

from repnext_mm.deploy.errors import DeployError  # noqa: E402
from repnext_mm.deploy.io import UNSAFE_FLAG, check_output_path  # noqa: E402

ARCHS = ('m0', 'm1', 'm2', 'm3', 'm4', 'm5')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='classifier, detector or segmentor config')
    parser.add_argument('checkpoint', nargs='?', help='training or fused checkpoint (omit for '
                                                      'random weights)')
    parser.add_argument('--arch', nargs='+', choices=ARCHS,
                        help='bare RepNeXt backbones (random weights) instead of a config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: 224 224 for classifiers and --backend cuda, '
                             'else 512 512)')
    parser.add_argument('--backend', nargs='+', choices=('torch', 'onnxruntime', 'cuda'),
                        default=['torch'], help='one or more backends (default torch)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='time only the backbone of the config\'s model')
    parser.add_argument('--batch-size', type=int, default=1, help='CPU batch size (default 1)')
    parser.add_argument('--warmup', type=int, default=10, help='untimed runs (default 10)')
    parser.add_argument('--runs', type=int, default=50, help='timed runs (default 50)')
    parser.add_argument('--threads', type=int, help='torch / onnxruntime intra-op threads '
                                                    '(default: torch.get_num_threads())')
    parser.add_argument('--max-batch', type=int, default=4096,
                        help='cuda: largest batch tried before halving on OOM (default 4096)')
    parser.add_argument('--no-unfused', action='store_true', help='time only the fused model')
    parser.add_argument('--dataset', action='store_true',
                        help="whole-model images/s over the config's test dataloader")
    parser.add_argument('--max-iter', type=int, default=200,
                        help='--dataset: images to run, including warm-up (default 200)')
    parser.add_argument('--out', help='write the rows to a .csv or .json file')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument(UNSAFE_FLAG, dest='unsafe_full_unpickle', action='store_true',
                        help='unpickle arbitrary objects in CHECKPOINT (trusted files only)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries (e.g. the test set data_root)')
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from repnext_mm.deploy.benchmark import describe_cpu, set_threads
    from repnext_mm.deploy.benchmark_suite import (benchmark_model, dataset_throughput,
                                                   markdown_table, speedup_summary, write_rows)
    from repnext_mm.deploy.builder import DEFAULT_SHAPES
    from repnext_mm.deploy.exportable import prepare_bare_backbone, prepare_model

    if bool(args.config) == bool(args.arch):
        raise DeployError('pass either CONFIG [CHECKPOINT] or --arch m0 ... m5 (bare backbones)')
    if args.batch_size < 1:
        raise DeployError(f'--batch-size must be >= 1, got {args.batch_size}')
    if args.shape and min(args.shape) < 32:
        raise DeployError(f'--shape must be at least 32x32, got {args.shape[0]}x{args.shape[1]}')
    if args.out:
        check_output_path(args.out, args.force)
    threads = set_threads(args.threads)
    progress = not args.no_progress
    print(f'machine: {describe_cpu()}; torch {torch.__version__} with {threads} intra-op threads')

    if args.arch:
        models = [(f'RepNeXt-{arch.upper()} backbone', prepare_bare_backbone(arch))
                  for arch in args.arch]
    else:
        prepared = prepare_model(args.config, args.checkpoint, args.cfg_options,
                                 args.unsafe_full_unpickle)
        label = Path(args.config).stem + (' backbone' if args.backbone_only else '')
        models = [(label, prepared)]
    for _, prepared in models:
        for note in prepared.notes:
            print(f'note: {note}')

    rows: list[dict] = []
    for label, prepared in models:
        if args.dataset:
            if len(args.backend) != 1 or args.backend[0] == 'onnxruntime':
                raise DeployError('--dataset runs the whole torch model: pass --backend torch (CPU) '
                                  'or --backend cuda')
            rows += dataset_throughput(prepared, args.max_iter, min(5, args.max_iter - 1),
                                       include_unfused=not args.no_unfused, progress=progress,
                                       device='cuda' if args.backend == ['cuda'] else 'cpu')
            continue
        kind = 'backbone' if args.backbone_only or prepared.task == 'backbone' else prepared.task
        default = (224, 224) if args.backend == ['cuda'] else DEFAULT_SHAPES[kind]
        shape = tuple(args.shape or default)
        rows += benchmark_model(prepared, label, args.backend, shape, args.batch_size,
                                args.warmup, args.runs, threads, args.backbone_only,
                                include_unfused=not args.no_unfused, max_batch=args.max_batch,
                                progress=progress)
    print()
    print(markdown_table(rows))
    for line in speedup_summary(rows):
        print(line)
    if args.out:
        print(f'wrote {write_rows(rows, args.out, force=True)}')
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except DeployError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
