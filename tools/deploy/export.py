"""Export a fused RepNeXt model to Core ML (.mlpackage) or ONNX.

Examples:
    # M4 backbone of a Mask R-CNN at 512x512 for the paper's iPhone latency protocol, with an
    # Xcode test package that measures it on a connected iPhone
    python tools/deploy/export.py configs/mmdet/mask_rcnn_repnext_m4_fpn_1x_coco.py \\
        --format coreml --backbone-only --shape 512 512 --ios-bench ios_bench_m4

    # classifier to ONNX (opset 17), checked with onnxruntime against torch
    python tools/deploy/export.py configs/mmpretrain/repnext_m1_8xb256_in1k.py m1.pth --format onnx

CHECKPOINT may be a training checkpoint (fused here), a checkpoint written by
tools/deploy/reparameterize.py, or omitted (random weights: fine for latency).
Core ML: the input is an image (0-255 pixels) with the config's mean/std built in; FP16 by
default. ONNX: the input is the normalized image tensor; mean/std are in the metadata.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source checkout

from repnext_mm.cli import (ArgumentParser, add_cfg_options_argument,  # noqa: E402
                            add_unsafe_unpickle_argument, run_cli)
from repnext_mm.utils.errors import InputError  # noqa: E402
from repnext_mm.utils.fileio import check_output_path  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='classifier, detector or segmentor config')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='training or fused checkpoint (omit for random weights)')
    parser.add_argument('--format', required=True, choices=('coreml', 'onnx'))
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default 224 224 for classifiers, else 512 512)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='export only the backbone (all its stage outputs); required for '
                             'detectors')
    parser.add_argument('--out', help='output path (.mlpackage or .onnx; default derived from '
                                      'the config name)')
    parser.add_argument('--precision', choices=('fp16', 'fp32'), default='fp16',
                        help='Core ML compute precision (default %(default)s)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset, >= 17 (default 17)')
    parser.add_argument('--ios-bench', metavar='DIR',
                        help='Core ML only: also write a Swift package whose XCTest measures the '
                             "model's latency on an iPhone")
    parser.add_argument('--force', action='store_true', help='overwrite existing outputs')
    add_unsafe_unpickle_argument(parser)
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def export_steps(args: argparse.Namespace, times_on_this_machine: bool) -> list[str]:
    """The steps ``run`` goes through, for the progress display."""
    steps = ['building and fusing the model']
    if args.format == 'onnx':
        return steps + ['exporting to ONNX and checking it with onnxruntime']
    steps.append('tracing and converting to Core ML')
    if times_on_this_machine:
        steps.append('timing MLModel.predict')
    if args.ios_bench:
        steps.append('writing the Xcode test package')
    return steps


def run(args: argparse.Namespace) -> None:
    from repnext_mm.deploy.verify import DEFAULT_SHAPES
    from repnext_mm.apis.model import prepare_model, preprocessing_of
    from repnext_mm.deploy.exportable import ExportWrapper
    from repnext_mm.utils.progress import StepProgress

    if args.ios_bench and args.format != 'coreml':
        raise InputError('--ios-bench needs --format coreml (the iPhone test runs a Core ML model)')
    if args.shape and min(args.shape) < 32:
        raise InputError(f'--shape must be at least 32x32 (the backbone downsamples 32x), got '
                          f'{args.shape[0]}x{args.shape[1]}')
    times_on_this_machine = False
    if args.format == 'coreml':
        from repnext_mm.deploy.coreml import can_run_coreml, require_coremltools
        require_coremltools()  # fail before the slow steps
        times_on_this_machine = can_run_coreml()

    with StepProgress(export_steps(args, times_on_this_machine)) as progress:
        progress.start('building and fusing the model')
        prepared = prepare_model(args.config, args.checkpoint, args.cfg_options,
                                 args.unsafe_full_unpickle)
        for note in prepared.notes:
            print(f'note: {note}')
        wrapper = ExportWrapper(prepared.fused(), prepared.task, args.backbone_only)
        height, width = args.shape or DEFAULT_SHAPES[wrapper.kind]
        suffix = '.mlpackage' if args.format == 'coreml' else '.onnx'
        part = '_backbone' if args.backbone_only else ''
        out = Path(args.out or f'{Path(args.config).stem}{part}_{height}x{width}{suffix}')
        check_output_path(out, args.force, kind='dir' if args.format == 'coreml' else 'file')
        if args.ios_bench:
            check_output_path(args.ios_bench, args.force, kind='dir')
        preprocessing = preprocessing_of(prepared.cfg)
        description = dict(model=f'{Path(args.config).stem}{part}', config=str(args.config),
                           weights=prepared.weights, arch=prepared.arch, task=prepared.task,
                           exported=wrapper.kind)

        if args.format == 'onnx':
            from repnext_mm.deploy.onnx_export import export_onnx
            progress.start('exporting to ONNX and checking it with onnxruntime')
            result = export_onnx(wrapper, (height, width), out, wrapper.output_names,
                                 opset=args.opset, preprocessing=preprocessing, force=args.force)
        else:
            from repnext_mm.deploy.coreml import export_coreml, time_coreml
            progress.start('tracing and converting to Core ML')
            result = export_coreml(wrapper, (height, width), out, preprocessing,
                                   precision=args.precision, force=args.force,
                                   description=description)
            timings = None
            if times_on_this_machine:
                progress.start('timing MLModel.predict')
                timings = time_coreml(result.path, (height, width))
            bench = None
            if args.ios_bench:
                from repnext_mm.deploy.ios_bench import write_ios_bench
                progress.start('writing the Xcode test package')
                bench = write_ios_bench(args.ios_bench, result.path, result.report,
                                        force=args.force)

    if args.format == 'onnx':
        print(f'wrote {result.path} (opset {args.opset}; onnxruntime vs torch: {result.difference})')
        for name, shape in result.output_shapes.items():
            print(f'  output {name}: {shape}')
        return

    from repnext_mm.deploy.coreml import LINUX_NOTE
    report = result.report
    print(f'wrote {result.path} and {result.report_path}')
    print(f'  input {report["inputs"][0]["name"]}: {width}x{height} {preprocessing.color_layout} '
          f'image; outputs: ' + ', '.join(f'{o["name"]} {o.get("shape")}' for o in report['outputs']))
    print(f'  {report["params"] / 1e6:.2f} M params, {report["gmacs"]:.2f} GMACs, '
          f'{report["num_ops"]} ops: ' + json.dumps(report['op_histogram']))
    if timings is not None:
        for unit, stats in timings.items():
            print(f'  MLModel.predict {unit}: median {stats["median_ms"]:.2f} ms '
                  f'(IQR {stats["p75_ms"] - stats["p25_ms"]:.2f} ms, {stats["runs"]} runs)')
    else:
        print(LINUX_NOTE.format(system=platform.system()))
    if bench is not None:
        print(f'wrote the Xcode test package {bench.directory}; on a Mac with the iPhone attached '
              '(device id: xcrun xctrace list devices) run:')
        print(f'  {bench.command}')


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == '__main__':
    sys.exit(run_cli(main))
