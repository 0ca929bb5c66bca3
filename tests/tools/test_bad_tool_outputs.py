"""The other tools' outputs: checked before any work, and a write the machine refuses is one line.

Cases of issue 19 ("Outputs", and ``reparameterize.py --shape`` checked as ``export.py`` checks
it): ``speed.py --json DIR``, ``make_shapes.py --root FILE``, a reparameterize / export target
under a file, under ``/proc`` or on a read-only file system, and a disk that fills up while the
fused checkpoint or the ONNX file is written (a small tmpfs the test mounts, else a simulated
``ENOSPC`` from the write call). Each: exit status 2, one ``error:`` line naming the path or
option, no traceback, and every file the test made before the run byte for byte as it was (a
previous output at the target included), with no temporary left. ``tools/train.py`` and
``tools/test.py`` have theirs in ``test_bad_outputs.py``.
"""
from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.helpers import SHAPES_CONFIGS, is_installed, run_tool, single_error_line

CLS_CONFIG = SHAPES_CONFIGS['classifier']
REPARAMETERIZE = 'tools/deploy/reparameterize.py'
EXPORT = 'tools/deploy/export.py'
#: The classifier's own image size: a fast forward for the parity checks.
SHAPE = ['--shape', '64', '64']
#: What a previous run left at the target of the disk-full cases.
PREVIOUS = b'the output of an earlier run'

pytestmark = pytest.mark.usefixtures('one_cpu_thread')


@dataclass
class Case:
    """A tool run that must be refused: the tool, its arguments, what its error line names."""
    tool: str
    argv: list
    names: list[str]
    #: Paths outside the test's folder that must not exist afterwards (e.g. under /proc).
    absent: list[Path] = field(default_factory=list)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (hidden ones, temporaries too), files hashed."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                         if p.is_file() else 'folder')
            for p in sorted(folder.rglob('*'))}


def a_file(path: Path) -> Path:
    path.write_text('a file, not a folder')
    return path


def read_only_folder(tmpfs) -> Path:
    folder = tmpfs('ro', read_only=True)
    if folder is None:
        pytest.skip('a read-only file system needs a tmpfs mount (root); the /proc cases check '
                    'the same write probe')
    return folder


def full_disk(tmpfs, tmp_path: Path, monkeypatch, simulate: Callable) -> Path:
    """A folder whose file system has no room for a model, holding ``out`` = :data:`PREVIOUS`.

    A 256 KiB tmpfs where mounting is allowed (the M0 checkpoint and ONNX file take megabytes);
    elsewhere ``simulate(monkeypatch)`` makes the tool's write call fail with ``ENOSPC``.
    """
    disk = tmpfs('disk', size='256k')
    if disk is None:
        disk = tmp_path / 'disk'
        disk.mkdir()
        simulate(monkeypatch)
    return disk


def _partial_write_then_enospc(tmp: Path) -> None:
    """A write that stops as a full disk stops it: part of the file, then ``ENOSPC``."""
    with open(tmp, 'wb') as file:
        file.write(b'\0' * 1024)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))


def simulate_full_disk_for_torch_save(monkeypatch) -> None:
    from repnext_mm.deploy import reparameterize
    from repnext_mm.utils.fileio import atomic_write

    monkeypatch.setattr(reparameterize, 'atomic_torch_save',
                        lambda obj, path: atomic_write(path, _partial_write_then_enospc))


def simulate_full_disk_for_onnx(monkeypatch) -> None:
    from repnext_mm.deploy import onnx_export

    monkeypatch.setattr(onnx_export, '_export',
                        lambda module, example, tmp, *args: _partial_write_then_enospc(tmp))


def make_case(name: str, tmp_path: Path, tmpfs, monkeypatch, checkpoint: Path) -> Case:
    """The run of the example ``name`` (its files are made under ``tmp_path``)."""
    model = [CLS_CONFIG, checkpoint]
    if name == 'speed-json-dir':
        return Case('tools/analysis/speed.py', ['--archs', 'm0', '--sections', 'fused',
                                                '--no-progress', '--json', tmp_path],
                    [f'--json {tmp_path} is a directory'])
    if name == 'make-shapes-root-file':
        root = a_file(tmp_path / 'shapes')
        return Case('tools/data/make_shapes.py', ['--root', root, '--quiet'],
                    [f'--root {root} is a file'])
    if name == 'reparameterize-shape-8-8':
        return Case(REPARAMETERIZE, [*model, tmp_path / 'fused.pth', '--shape', 8, 8],
                    ['--shape must be at least 32x32', 'got 8x8'])
    if name in ('reparameterize-out-under-a-file', 'export-out-under-a-file'):
        parent = a_file(tmp_path / 'models')
        out = parent / ('fused.pth' if name.startswith('reparameterize') else 'm0.onnx')
        names = [f'output directory {parent} is a file']
    elif name in ('reparameterize-out-under-proc', 'export-out-under-proc'):
        out = Path('/proc') / ('fused.pth' if name.startswith('reparameterize') else 'm0.onnx')
        names = [f'{out}: cannot write into /proc']
    elif name in ('reparameterize-out-read-only', 'export-out-read-only'):
        folder = read_only_folder(tmpfs)
        out = folder / ('fused.pth' if name.startswith('reparameterize') else 'm0.onnx')
        names = [f'{out}: cannot write into {folder}', 'Read-only file system [Errno 30]']
    elif name in ('reparameterize-disk-full', 'export-disk-full'):
        simulate = (simulate_full_disk_for_torch_save if name.startswith('reparameterize')
                    else simulate_full_disk_for_onnx)
        out = full_disk(tmpfs, tmp_path, monkeypatch, simulate) / (
            'fused.pth' if name.startswith('reparameterize') else 'm0.onnx')
        out.write_bytes(PREVIOUS)
        names = [f'cannot write {out}: No space left on device [Errno 28]', 'free space']
        argv = ([*model, out, *SHAPE, '--force'] if name.startswith('reparameterize') else
                [*model, '--format', 'onnx', *SHAPE, '--out', out, '--force'])
        return Case(REPARAMETERIZE if name.startswith('reparameterize') else EXPORT, argv, names)
    else:
        raise ValueError(name)
    if name.startswith('reparameterize'):
        return Case(REPARAMETERIZE, [*model, out, *SHAPE], names, [out])
    return Case(EXPORT, [*model, '--format', 'onnx', *SHAPE, '--out', out], names, [out])


needs_onnx = pytest.mark.skipif(not is_installed('onnx'),
                                reason='onnx is not installed (the ONNX export writes with it)')
CASES = ['speed-json-dir', 'make-shapes-root-file', 'reparameterize-shape-8-8',
         'reparameterize-out-under-a-file', 'reparameterize-out-under-proc',
         'reparameterize-out-read-only', 'export-out-under-a-file', 'export-out-under-proc',
         'export-out-read-only', 'reparameterize-disk-full',
         pytest.param('export-disk-full', marks=needs_onnx)]


@pytest.mark.parametrize('name', CASES)
def test_a_bad_output_is_one_error_line_and_leaves_everything_as_it_was(
        name, trained_checkpoints, tmp_path, tmpfs, monkeypatch, capsys):
    checkpoint = trained_checkpoints['classifier']
    work = tmp_path / 'case'
    work.mkdir()
    case = make_case(name, work, tmpfs, monkeypatch, checkpoint)
    before = snapshot(work)
    status, stdout, stderr = run_tool(case.tool, case.argv, capsys)
    line = single_error_line(stderr)
    assert status == 2, line
    for part in case.names:
        assert part in line, line
    assert snapshot(work) == before  # no partial file, no temporary, a previous output intact
    assert not any(path.exists() for path in case.absent)
    if name == 'reparameterize-disk-full':  # refused at the write, after the verification
        assert 'original vs fused outputs' in stdout, stdout
    elif name == 'export-disk-full':
        assert 'exporting to ONNX' in stderr, stderr
    else:  # refused before any work: nothing was built, measured or generated
        assert 'Machine' not in stdout and 'running the original' not in stdout, stdout
        assert 'building and fusing' not in stderr, stderr
