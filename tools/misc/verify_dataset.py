#!/usr/bin/env python
"""Decode every image and label map a config's datasets read, and list each one that fails.

For detection (COCO layout), segmentation (mmseg folders) and classification (ImageNet style):
the annotation files and folders are checked as tools/train.py checks them, then every file is
decoded with OpenCV in parallel processes. Each bad file is one line on stdout; the tool then
exits with status 2 and one ``error:`` line, or 0 with a summary when every file decodes.
tools/train.py and tools/test.py only read the first bytes of each file; this is the full check.

Usage::

    python tools/misc/verify_dataset.py CONFIG [--split train val test] [--workers N]
        [--cfg-options KEY=VALUE ...] [--no-progress]
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from repnext_mm.cli import ArgumentParser, add_cfg_options_argument, positive_int, run_cli

SPLITS = ('train', 'val', 'test')


def build_parser() -> ArgumentParser:
    from repnext_mm.datasets.verify import default_workers

    parser = ArgumentParser(prog='tools/misc/verify_dataset.py',
                            description=__doc__.split('\n\n')[0],
                            epilog='\n\n'.join(__doc__.split('\n\n')[1:]),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='mmdet, mmseg or mmpretrain config')
    parser.add_argument('--split', nargs='+', choices=SPLITS, default=list(SPLITS),
                        help='the {split}_dataloader datasets to check (default: all three)')
    parser.add_argument('--workers', type=positive_int, default=default_workers(),
                        help=f'decoding processes (default: os.cpu_count(), here '
                             f'{default_workers()}; 1 decodes in this process)')
    add_cfg_options_argument(parser)
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from repnext_mm.apis.config import load_config
    from repnext_mm.apis.inputs import iter_data_files
    from repnext_mm.datasets.checks import describe_problem
    from repnext_mm.datasets.verify import decode_all
    from repnext_mm.utils.errors import InputError

    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    started = time.perf_counter()
    seen: dict[tuple[str, ...], str] = {}
    counts: dict[str, tuple[int, int]] = {}  # key -> (bad, total)
    for listed in iter_data_files(cfg, args.split):
        for warning in listed.warnings:
            print(f'warning: {warning}', file=sys.stderr)
        paths = tuple(f.path for f in listed.files)
        if paths in seen:  # test_dataloader = val_dataloader in most configs
            print(f'{listed.key}: the same files as {seen[paths]}', file=sys.stderr)
            continue
        seen[paths] = listed.key
        print(f'{listed.key}: decoding {len(listed.files)} files with {args.workers} '
              f'process{"es" * (args.workers > 1)}', file=sys.stderr)
        problems = decode_all(listed.files, args.workers, progress=not args.no_progress)
        for file, problem in problems:
            print(describe_problem(file, problem), flush=True)
        counts[listed.key] = (len(problems), len(listed.files))
    if not counts:
        raise InputError(f'{args.config} has no dataset of a known layout in the splits '
                         f'{", ".join(args.split)} (COCO, mmseg folders, ImageNet style); '
                         'nothing to verify')
    bad = sum(b for b, _ in counts.values())
    total = sum(t for _, t in counts.values())
    if bad:
        bad_keys = [key for key, (b, _) in counts.items() if b]
        if len(bad_keys) == 1:
            what = f'{bad} of {counts[bad_keys[0]][1]} files in {bad_keys[0]} are unreadable ('
        else:
            what = (f'{bad} of {total} files are unreadable ('
                    + ', '.join(f'{counts[k][0]} in {k}' for k in bad_keys) + '; ')
        raise InputError(f'{what}listed above); replace or remove them')
    print(f'all {total} files decode ({", ".join(counts)}) in '
          f'{time.perf_counter() - started:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
