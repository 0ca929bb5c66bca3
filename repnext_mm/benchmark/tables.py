"""Benchmark rows (one flat dict per measurement) as Markdown, a speed-up summary, CSV or JSON."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import torch

from repnext_mm.utils.fileio import atomic_write_json, atomic_write_text, check_output_path
from repnext_mm.utils.errors import InputError
from .runtimes import describe_cpu

#: The Markdown table's columns. ``x_floor``: time over the compute floor (CPU rows only).
COLUMNS = ('model', 'arch', 'exported', 'backend', 'form', 'input', 'batch_size', 'params_m',
           'gmacs', 'median_ms', 'iqr_ms', 'p25_ms', 'p75_ms', 'mean_ms', 'min_ms', 'runs',
           'warmup', 'images_per_s', 'x_floor', 'threads', 'device')


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.2f}' if abs(value) >= 0.01 or value == 0 else f'{value:.2e}'
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Rows as a Markdown table (only columns present in some row)."""
    columns = [c for c in (columns or COLUMNS) if any(c in row for row in rows)]
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for row in rows:
        lines.append('| ' + ' | '.join(_cell(row.get(c, '')) for c in columns) + ' |')
    return '\n'.join(lines)


def _pair_key(row: dict) -> tuple:
    return row['model'], row['backend'], row['input'], row.get('threads')


def speedup_summary(rows: Sequence[dict]) -> list[str]:
    """``'<model> on <backend> at <input> (threads=N): fused X ms vs unfused Y ms (Rx)'`` for
    each pair of rows that differ only in the form."""
    lines = []
    fused = {_pair_key(r): r for r in rows if r.get('form') == 'fused'}
    for row in rows:
        key = _pair_key(row)
        if row.get('form') == 'unfused' and key in fused and fused[key]['median_ms']:
            ratio = row['median_ms'] / fused[key]['median_ms']
            threads = f' (threads={row["threads"]})' if row.get('threads') else ''
            lines.append(f'{row["model"]} on {row["backend"]} at {row["input"]}{threads}: fused '
                         f'{fused[key]["median_ms"]:.2f} ms vs unfused {row["median_ms"]:.2f} ms '
                         f'({ratio:.2f}x)')
    return lines


def _csv_text(rows: Sequence[dict]) -> str:
    columns: list[str] = []
    for row in rows:  # every key of every row, in order of first appearance
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_rows(rows: Sequence[dict], path: str | os.PathLike, force: bool = True) -> Path:
    """Writes the rows as ``.csv`` or ``.json`` (by suffix), atomically."""
    path = Path(path)
    if path.suffix not in ('.csv', '.json'):
        raise InputError(f'--out must end in .csv or .json, got {path}')
    check_output_path(path, force)
    if path.suffix == '.csv':
        return atomic_write_text(_csv_text(rows), path)
    meta = dict(machine=describe_cpu(), platform=platform.platform(),
                torch_version=str(torch.__version__))
    return atomic_write_json(dict(meta=meta, rows=list(rows)), path)


def load_rows(path: str | os.PathLike) -> list[dict]:
    """Reads rows written by :func:`write_rows` (JSON)."""
    return json.loads(Path(path).read_text(encoding='utf-8'))['rows']
