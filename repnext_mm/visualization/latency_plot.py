"""Latency-accuracy plots in the style of the paper's Figure 1.

Latency comes from ``tools/analysis/benchmark.py`` output (CSV or JSON rows) and/or the paper's
iPhone 12 measurements (Table 2); ImageNet-1K top-1 comes from the model zoo
(``model-index.yml`` and the metafiles it imports) or the paper (:mod:`repnext_mm.paper`). Every
series is one line through RepNeXt-M1 .. M5 with a label at each point; M0 has no published
accuracy and is left out (with a note).
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from repnext_mm import paper
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write

#: ImageNet-1K top-1 (%) of the paper with hard distillation (Table 2) and without (Table 3).
PAPER_TOP1_DISTILLED: dict[str, float] = paper.repnext_top1(distilled=True)
PAPER_TOP1_PLAIN: dict[str, float] = paper.repnext_top1(distilled=False)

#: Accepted spellings of the benchmark columns (first match wins).
LATENCY_COLUMNS = ('median_ms', 'latency_ms', 'latency_ms_median', 'latency_median_ms', 'latency')
ARCH_COLUMNS = ('arch', 'model')
INPUT_COLUMNS = ('input', 'shape', 'input_shape')
#: Columns that split the rows into separate lines (when they vary).
SERIES_KEYS = ('backend', 'device', 'input', 'form', 'exported', 'batch_size')
ARCH_PATTERN = re.compile(r'(?:^|[^a-z0-9])(?:repnext[-_ ]?)?(%s)(?![0-9.])'
                          % '|'.join(map(re.escape, RepNeXt.arch_settings)), re.IGNORECASE)
PLOT_SUFFIXES = ('.png', '.svg', '.pdf')


class PlotError(InputError):
    """Bad plot input: a missing column, no usable rows, an unknown file type."""


@dataclass
class Point:
    """One model on the plot."""
    label: str
    latency_ms: float
    top1: float


@dataclass
class Series:
    """One line of the plot (a backend / device / input size, or a paper measurement)."""
    label: str
    points: list[Point]
    style: Mapping[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------
def arch_of(text: Any) -> str | None:
    """``'m3'`` from ``'m3'``, ``'RepNeXt-M3 backbone'``, ``'repnext_m3_8xb256_in1k'``; else ``None``."""
    match = ARCH_PATTERN.search(str(text or ''))
    return match.group(1).lower() if match else None


def load_benchmark_rows(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Reads benchmark rows from CSV files and JSON files (``{"rows": [...]}`` or a list).

    Each row gets ``_source`` (its file) for error messages.
    """
    if not paths:
        raise PlotError('no benchmark file given')
    rows: list[dict[str, Any]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise PlotError(f'benchmark file {path} does not exist; write one with '
                            'tools/analysis/benchmark.py --out FILE.csv|.json')
        suffix = path.suffix.lower()
        if suffix == '.csv':
            with path.open(newline='', encoding='utf-8') as handle:
                found = list(csv.DictReader(handle))
        elif suffix == '.json':
            try:
                data = json.loads(path.read_text(encoding='utf-8'))
            except json.JSONDecodeError as error:
                raise PlotError(f'{path} is not valid JSON: {error}') from error
            found = data.get('rows') if isinstance(data, dict) else data
            if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
                raise PlotError(f'{path} holds no list of rows: expected {{"rows": [{{...}}]}} '
                                '(as tools/analysis/benchmark.py writes) or a JSON list of objects')
        else:
            raise PlotError(f'cannot read {path}: benchmark files must end in .csv or .json')
        if not found:
            raise PlotError(f'{path} holds no rows')
        rows.extend(dict(row, _source=str(path)) for row in found)
    return rows


def _first_column(row: Mapping[str, Any], names: Sequence[str]) -> str | None:
    return next((name for name in names if row.get(name) not in (None, '')), None)


def _float(value: Any, column: str, source: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PlotError(f'{source}: column {column!r} holds {value!r}, not a number') from None
    if not math.isfinite(number) or number <= 0:
        raise PlotError(f'{source}: column {column!r} holds {value!r}; latencies must be positive')
    return number


def _series_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    values = []
    for name in SERIES_KEYS:
        column = _first_column(row, INPUT_COLUMNS) if name == 'input' else name
        values.append(str(row.get(column, '') or '') if column else '')
    return tuple(values)


def benchmark_series(rows: Sequence[Mapping[str, Any]], top1: Mapping[str, float],
                     form: str | None = 'fused', backends: Sequence[str] | None = None,
                     inputs: Sequence[str] | None = None) -> tuple[list[Series], list[str]]:
    """Groups benchmark rows into lines and attaches each arch's top-1.

    Args:
        rows: From :func:`load_benchmark_rows`.
        top1: ``{arch: top-1 %}``.
        form: Keep rows of this ``form`` (``'fused'``/``'unfused'``); ``None`` keeps all.
            Rows without a ``form`` column are always kept.
        backends: Keep rows whose backend contains one of these strings (case-insensitive).
        inputs: Keep rows whose input size is one of these (e.g. ``'224x224'``).

    Returns:
        ``(series, notes)``: one series per combination of backend, device, input size, form,
        exported part and batch size; notes say which rows were skipped and why.

    Raises:
        PlotError: A required column is missing, or no row is left to plot.
    """
    notes: list[str] = []
    for row in rows:
        missing = []
        if _first_column(row, ARCH_COLUMNS) is None:
            missing.append(f'one of {ARCH_COLUMNS} (the RepNeXt variant, e.g. m3)')
        if _first_column(row, LATENCY_COLUMNS) is None:
            missing.append(f'one of {LATENCY_COLUMNS} (latency in ms)')
        if missing:
            present = sorted(k for k in row if not k.startswith('_'))
            raise PlotError(f'{row.get("_source", "benchmark")}: a row lacks {" and ".join(missing)}; '
                            f'its columns are {present}. Write the file with '
                            'tools/analysis/benchmark.py --out')

    kept = []
    for row in rows:
        if form and row.get('form') not in (None, '', form):
            continue
        if backends and not any(b.lower() in str(row.get('backend', '')).lower() for b in backends):
            continue
        row_input = row.get(_first_column(row, INPUT_COLUMNS) or 'input')
        if inputs and str(row_input) not in inputs:
            continue
        kept.append(row)
    if not kept:
        available = sorted({(str(r.get('backend', '?')), str(r.get('form', '?')),
                             str(r.get(_first_column(r, INPUT_COLUMNS) or 'input', '?'))) for r in rows})
        raise PlotError(f'no benchmark row matches form={form!r} backends={list(backends or [])} '
                        f'inputs={list(inputs or [])}; the files hold (backend, form, input): '
                        f'{available}')

    groups: 'OrderedDict[tuple[str, ...], list]' = OrderedDict()
    for row in kept:
        groups.setdefault(_series_key(row), []).append(row)
    # Name each line by its backend plus whatever else differs between the lines.
    varying = [k for i, k in enumerate(SERIES_KEYS) if len({key[i] for key in groups}) > 1]

    series, unmatched = [], set()
    for key, group in groups.items():
        fields = dict(zip(SERIES_KEYS, key))
        parts = [fields['backend'] or 'benchmark']
        for name in varying:
            if name != 'backend' and fields[name]:
                parts.append(f'batch {fields[name]}' if name == 'batch_size' else fields[name])
        if fields['exported'] == 'backbone' and 'exported' not in varying:
            parts.append('backbone only')
        label = ', '.join(parts)
        points: dict[str, Point] = {}
        for row in group:
            arch = arch_of(row.get('arch')) or arch_of(row.get('model'))
            source = row.get('_source', 'benchmark')
            if arch is None:
                unmatched.add(str(row.get('arch') or row.get('model')))
                continue
            if arch not in top1:
                unmatched.add(arch)
                continue
            column = _first_column(row, LATENCY_COLUMNS)
            latency = _float(row[column], column, source)
            if arch in points:
                raise PlotError(f'{arch.upper()} appears twice in the series "{label}" ({source}); '
                                'pick one measurement with --backend / --input / --form or '
                                'separate files')
            points[arch] = Point(arch.upper(), latency, float(top1[arch]))
        if points:
            series.append(Series(label, [points[a] for a in sorted(points)]))
    if unmatched:
        notes.append(f'no top-1 accuracy for {", ".join(sorted(unmatched))}: left out of the plot')
    if not series:
        raise PlotError(f'none of the benchmark archs has a known top-1 accuracy (the benchmark '
                        f'holds {sorted(unmatched)}, accuracies are known for {sorted(top1)}); '
                        'benchmark M1..M5 (e.g. --arch m1 m2 m3 m4 m5) or pass a --zoo that '
                        'lists them')
    return series, notes


def paper_series(top1: Mapping[str, float] | None = None) -> Series:
    """The paper's RepNeXt line: iPhone 12 latency and (by default distilled) top-1."""
    top1 = top1 or PAPER_TOP1_DISTILLED
    points = [Point(arch.upper(), result.iphone12_ms, float(top1[arch]))
              for arch, result in sorted(paper.REPNEXT_CLASSIFIERS.items()) if arch in top1]
    return Series('RepNeXt, iPhone 12 (paper)', points, dict(linestyle='--'))


def paper_baseline_series() -> list[Series]:
    """The paper's comparison models (Table 2, distilled top-1), one line per family."""
    series = []
    for family, models in paper.BASELINE_CLASSIFIERS.items():
        # The legend says when a family was evaluated at another size than 224 (FastViT: 256).
        sizes = sorted({result.image_size for result in models.values()} - {224})
        label = f'{family} ({"/".join(map(str, sizes))})' if sizes else family
        points = [Point(name, result.iphone12_ms, result.top1) for name, result in models.items()]
        series.append(Series(f'{label}, iPhone 12 (paper)', points,
                             dict(linestyle=':', alpha=0.7, label_points=False)))
    return series


def load_zoo_top1(model_index: str | os.PathLike, distilled: bool = True) -> dict[str, float]:
    """``{arch: ImageNet-1K top-1}`` from ``model-index.yml`` and the metafiles it imports.

    Reads every model of the released design (no ``Design`` other than ``repnext`` in its
    metadata) whose results include ``Task: Image Classification`` with a ``Top 1 Accuracy``
    metric; the arch comes from the model name (``repnext_m3_...``). The zoo
    lists each arch twice (with and without distillation, ``..._distill`` in the name):
    ``distilled`` picks which, falling back to the other where only one exists.
    """
    import yaml

    index_path = Path(model_index)
    if not index_path.is_file():
        raise PlotError(f'model zoo index {index_path} does not exist; pass the repository\'s '
                        'model-index.yml (written by tools/misc/gen_metafiles.py), or omit --zoo '
                        "to use the paper's accuracies")

    def read(path: Path) -> Any:
        try:
            return yaml.safe_load(path.read_text(encoding='utf-8')) or {}
        except yaml.YAMLError as error:
            raise PlotError(f'{path} is not valid YAML: {error}') from error

    index = read(index_path)
    documents = [index]
    for relative in index.get('Import', []) or []:
        path = index_path.parent / relative
        if not path.is_file():
            raise PlotError(f'{index_path} imports {relative}, which does not exist; regenerate the '
                            'metafiles with tools/misc/gen_metafiles.py')
        documents.append(read(path))
    # {arch: {is_distilled: top-1}}
    found: dict[str, dict[bool, float]] = {}
    for document in documents:
        for model in document.get('Models', []) or []:
            name = str(model.get('Name', ''))
            # The ablation designs (Table 5, M0E-M2E) are other models of the same archs.
            if (model.get('Metadata') or {}).get('Design', 'repnext') != 'repnext':
                continue
            arch = arch_of(name)
            results = model.get('Results') or []
            if isinstance(results, dict):
                results = [results]
            for result in results:
                metrics = result.get('Metrics') or {}
                if result.get('Task') == 'Image Classification' and 'Top 1 Accuracy' in metrics \
                        and arch is not None:
                    found.setdefault(arch, {})['distill' in name.lower()] = float(metrics['Top 1 Accuracy'])
    if not found:
        raise PlotError(f'{index_path} lists no RepNeXt model with an Image Classification '
                        'Top 1 Accuracy')
    return {arch: values.get(distilled, values.get(not distilled)) for arch, values in found.items()}


# ------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------
def choose_xscale(series: Sequence[Series], xscale: str = 'auto') -> str:
    """``'log'`` when the lines' latencies differ by more than 8x (e.g. CPU ms next to the
    iPhone's), so every line keeps its shape; otherwise ``'linear'``."""
    if xscale in ('linear', 'log'):
        return xscale
    if xscale != 'auto':
        raise PlotError(f"xscale must be 'auto', 'linear' or 'log', got {xscale!r}")
    latencies = [p.latency_ms for s in series for p in s.points]
    return 'log' if max(latencies) / min(latencies) > 8 else 'linear'


def plot_latency_accuracy(series: Sequence[Series], out: str | os.PathLike,
                          title: str = 'RepNeXt: latency vs ImageNet-1K accuracy',
                          xscale: str = 'auto', ylabel: str = 'ImageNet-1K top-1 (%)',
                          dpi: int = 150) -> Path:
    """Draws one line per series, a label at each point, and writes the figure atomically.

    Args:
        series: The lines (at least one non-empty).
        out: ``.png``, ``.svg`` or ``.pdf`` path; its folder must exist.
        title: Figure title.
        xscale: ``'auto'`` (see :func:`choose_xscale`), ``'linear'`` or ``'log'``.
        ylabel: Y axis label.
        dpi: Resolution of raster output.

    Returns:
        The written path.
    """
    out = Path(out)
    if out.suffix.lower() not in PLOT_SUFFIXES:
        raise PlotError(f'--out must end in {", ".join(PLOT_SUFFIXES)}, got {out}')
    if not out.parent.is_dir():
        raise PlotError(f'the folder of {out} does not exist; create it first')
    series = [s for s in series if s.points]
    if not series:
        raise PlotError('nothing to plot: every series is empty')
    scale = choose_xscale(series, xscale)

    import matplotlib
    matplotlib.use('Agg', force=False)  # files only; no display is needed or wanted
    import matplotlib.pyplot as plt

    # SVG keeps text as text (searchable, editable) instead of glyph outlines.
    with matplotlib.rc_context({'svg.fonttype': 'none'}):
        return _draw(plt, series, out, title, scale, ylabel, dpi)


def _draw(plt: Any, series: Sequence[Series], out: Path, title: str, scale: str, ylabel: str,
          dpi: int) -> Path:
    fig, ax = plt.subplots(figsize=(7.0, 5.0), constrained_layout=True)
    try:
        for index, line in enumerate(series):
            style = dict(line.style)
            label_points = style.pop('label_points', True)
            xs = [p.latency_ms for p in line.points]
            ys = [p.top1 for p in line.points]
            artist, = ax.plot(xs, ys, marker='o', markersize=5, linewidth=1.8, label=line.label,
                              zorder=3 + (len(series) - index), **style)
            if label_points:
                for point in line.points:
                    # Labels above every line and marker, so crowded plots stay readable.
                    ax.annotate(point.label, (point.latency_ms, point.top1), textcoords='offset points',
                                xytext=(5, -11), fontsize=8, color=artist.get_color(),
                                zorder=4 + len(series))
        ax.set_xscale(scale)
        if scale == 'log':
            # Plain numbers (0.5, 1, 2, 5, 10 ms) instead of powers of ten.
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f'{value:g}'))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel('Latency (ms)' + (', log scale' if scale == 'log' else ''))
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which='both', linestyle=':', alpha=0.6)
        ax.legend(fontsize=8, loc='lower right')
        fmt = out.suffix.lower().lstrip('.')
        atomic_write(out, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    finally:
        plt.close(fig)
    return out


def describe_series(series: Iterable[Series]) -> str:
    """A plain-text table of the plotted points."""
    lines = []
    for line in series:
        cells = ', '.join(f'{p.label} {p.latency_ms:.4g} ms / {p.top1:.1f}%' for p in line.points)
        lines.append(f'{line.label}: {cells}')
    return '\n'.join(lines)
