#!/usr/bin/env python
"""Time the data checks on a generated set: the quick pass before every run and the full decode.

Writes N small JPEGs and their COCO annotation file into a temporary folder (removed afterwards),
then times the check tools/train.py runs (annotation JSON parsed, each image stat-ed and its
first bytes read; also with stat alone) and tools/misc/verify_dataset.py's full pass (every image
decoded in parallel processes). The logic is repnext_mm/benchmark/data_check.py.

Usage::

    python tools/analysis/data_check_benchmark.py [--num-images 10000] [--workers N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from repnext_mm.cli import ArgumentParser, positive_int, run_cli


def main(argv: Sequence[str] | None = None) -> int:
    from repnext_mm.benchmark.data_check import format_times, time_data_checks

    parser = ArgumentParser(prog='tools/analysis/data_check_benchmark.py',
                            description=__doc__.split('\n\n')[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--num-images', type=positive_int, default=10000,
                        help='images to generate (default 10000)')
    parser.add_argument('--workers', type=positive_int, default=None,
                        help='processes of the full pass (default: os.cpu_count())')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='data_check_') as root:
        times = time_data_checks(Path(root), args.num_images, args.workers)
    print(format_times(times))
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
