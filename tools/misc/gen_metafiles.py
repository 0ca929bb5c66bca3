#!/usr/bin/env python
"""Write model-index.yml and configs/{mmpretrain,mmdet,mmseg}/metafile.yml from the configs.

Every config under configs/ (except _base_/) becomes one model entry with the paper's results,
the authors' released weights and complexity measured on the model the config builds
(repnext_mm/zoo/metafiles.py says exactly what is counted).

Usage:
    python tools/misc/gen_metafiles.py            # (re)write the files
    python tools/misc/gen_metafiles.py --check    # exit 1 if any file is stale (CI)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repnext_mm.cli import ArgumentParser, run_cli
from repnext_mm.zoo import metafiles

ROOT = Path(__file__).resolve().parents[2]  # the checkout, or repnext_mm/.mim in a wheel


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0],
                            epilog='\n\n'.join(__doc__.split('\n\n')[1:]),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--check', action='store_true',
                        help='write nothing; exit 1 if a file differs from what would be written')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outputs = metafiles.generate(ROOT, show_progress=not args.no_progress)
    if args.check:
        stale = metafiles.stale_files(outputs, ROOT)
        if stale:
            print('stale (rerun python tools/misc/gen_metafiles.py): ' + ', '.join(stale),
                  file=sys.stderr)
            return 1
        print('model-index.yml and the metafiles are up to date')
        return 0
    for path in metafiles.write_outputs(outputs, ROOT):
        print(f'wrote {path.relative_to(ROOT)}')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
