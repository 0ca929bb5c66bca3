"""tools/analysis/data_check_benchmark.py: times both passes over a generated COCO set."""
from __future__ import annotations

import re

from tests.helpers import run_tool


def test_prints_the_time_of_each_pass(capsys):
    status, out, err = run_tool('tools/analysis/data_check_benchmark.py',
                                ['--num-images', 40, '--workers', 2], capsys)
    assert status == 0, err[-3000:]
    lines = out.splitlines()
    assert lines[0].startswith('40 images (COCO layout')
    assert [re.split(r'[:(]| {2}', line.strip())[0].strip() for line in lines[1:]] == [
        'annotation JSON parsed, files listed', 'each file stat-ed', 'each file stat-ed + first '
        '16 bytes', 'quick pass in all', 'full pass']
    for line in lines[1:]:
        assert re.search(r' \d+\.\d\d s +\d+ images/s$', line), line
