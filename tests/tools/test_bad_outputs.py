"""tools/train.py and tools/test.py check their outputs before any work, and a refused or failed
run leaves what an earlier run wrote as it was.

Cases of issue 19 ("Outputs", "A refused run damages the previous run's record"): a work
folder that is a file, lies under one, under /proc or on a read-only file system; a
``--show-dir`` that is a file; a disk that fills up while a checkpoint or ``--out`` is written
(a small tmpfs the test mounts, else a simulated ENOSPC); a refused run on a finished run's
folder.
"""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from repnext_mm.cli import run_cli
from tests.helpers import (REPO, SHAPES_CONFIGS, describe_process, free_port, load_tool,
                           run_tool_process, single_error_line)
from tests.tools.test_checked_inputs import TINY_TRAIN

CLS_CONFIG = SHAPES_CONFIGS['classifier']

pytestmark = pytest.mark.usefixtures('one_cpu_thread')
train_tool = load_tool('tools/train.py').main
eval_tool = load_tool('tools/test.py').main


@pytest.fixture
def in_repo(monkeypatch, shapes_data):
    monkeypatch.chdir(REPO)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) and a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def refused(capsys, tool, argv) -> str:
    status = run_cli(tool, [str(a) for a in argv])
    line = single_error_line(capsys.readouterr().err)
    assert status == 2, line
    return line


@pytest.fixture(scope='module')
def finished_training(shapes_data, tmp_path_factory) -> Path:
    """The work folder of a finished tiny training (its config dump, log and epoch_1.pth)."""
    import torch

    work = tmp_path_factory.mktemp('finished') / 'work'
    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(REPO)
    torch.set_num_threads(1)
    try:
        assert run_cli(train_tool, [str(CLS_CONFIG), '--work-dir', str(work), '--cfg-options',
                                    *TINY_TRAIN]) == 0
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    assert (work / 'epoch_1.pth').is_file() and (work / CLS_CONFIG.name).is_file()
    return work


# ------------------------------------------------------------------------------------------
# The work folder, checked before any work (train and test)
# ------------------------------------------------------------------------------------------
def bad_work_dir(case: str, tmp_path: Path, tmpfs) -> tuple[Path, str]:
    """The ``--work-dir`` of ``case`` and what its error line says."""
    if case == 'work-dir-is-a-file':
        (tmp_path / 'taken').write_text('a file')
        return tmp_path / 'taken', 'is a file'
    if case == 'work-dir-under-a-file':
        (tmp_path / 'taken').write_text('a file')
        return tmp_path / 'taken' / 'run', f'lies under the file {tmp_path / "taken"}'
    if case == 'work-dir-under-proc':
        return Path('/proc/repnext_run'), 'cannot write into /proc'
    read_only = tmpfs('ro', read_only=True)
    if read_only is None:
        pytest.skip('a read-only file system needs a tmpfs mount (root); '
                    'tests/utils/test_fileio.py checks the probe itself')
    return read_only / 'run', 'Read-only file system [Errno 30]'


WORK_DIR_CASES = ['work-dir-is-a-file', 'work-dir-under-a-file', 'work-dir-under-proc',
                  'work-dir-read-only']


@pytest.mark.parametrize('tool', ['train', 'test'])
@pytest.mark.parametrize('case', WORK_DIR_CASES)
def test_an_unusable_work_dir_is_refused_before_any_work(case, tool, trained_checkpoints,
                                                         in_repo, tmp_path, tmpfs, capsys):
    work, expected = bad_work_dir(case, tmp_path, tmpfs)
    before = snapshot(tmp_path)
    argv = ([CLS_CONFIG, '--cfg-options', *TINY_TRAIN] if tool == 'train' else
            [CLS_CONFIG, trained_checkpoints['classifier']])
    line = refused(capsys, train_tool if tool == 'train' else eval_tool,
                   [*argv[:1], '--work-dir', work, *argv[1:]])
    assert f'--work-dir {work}' in line and expected in line, line
    assert snapshot(tmp_path) == before  # nothing created, the file untouched


# ------------------------------------------------------------------------------------------
# --show-dir and --out
# ------------------------------------------------------------------------------------------
def test_show_dir_that_is_a_file_is_refused_before_the_test(trained_checkpoints, in_repo,
                                                            tmp_path, capsys):
    shown = tmp_path / 'shown.png'
    shown.write_bytes(b'not a folder')
    line = refused(capsys, eval_tool, [CLS_CONFIG, trained_checkpoints['classifier'],
                                       '--show-dir', shown, '--work-dir', tmp_path / 'work'])
    assert f'--show-dir {shown} is a file' in line
    assert not (tmp_path / 'work').exists()  # refused before the runner was built
    assert shown.read_bytes() == b'not a folder'


def test_out_in_a_read_only_folder_is_refused_before_the_test(trained_checkpoints, in_repo,
                                                              tmp_path, tmpfs, capsys):
    read_only = tmpfs('ro', read_only=True)
    if read_only is None:
        pytest.skip('a read-only file system needs a tmpfs mount (root)')
    line = refused(capsys, eval_tool, [CLS_CONFIG, trained_checkpoints['classifier'], '--out',
                                       read_only / 'res.pkl', '--work-dir', tmp_path / 'work'])
    assert f'--out folder {read_only}' in line and 'Read-only file system' in line
    assert not (tmp_path / 'work').exists()


# ------------------------------------------------------------------------------------------
# A disk that fills up while writing
# ------------------------------------------------------------------------------------------
def fill(folder: Path, leave: int) -> None:
    """Fills ``folder``'s file system up to ``leave`` free bytes."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / 'filler', 'wb') as file:
        file.write(b'\0' * max(0, free - leave))


def no_temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob('.*') if '.tmp' in p.name]


@pytest.mark.slow  # runs a whole test or training
def test_a_full_disk_while_test_dumps_out(trained_checkpoints, in_repo, tmp_path, tmpfs,
                                          monkeypatch, capsys):
    small = tmpfs('small', size='256k')
    out_dir = small if small is not None else tmp_path / 'out'
    out_dir.mkdir(exist_ok=True)
    out = out_dir / 'res.pkl'
    out.write_bytes(b'results of an earlier test')
    if small is not None:
        fill(small, leave=8 << 10)  # 50 predictions take more
    else:  # no mount allowed here: the dump's write itself fails as a full disk would
        import mmengine.fileio

        def full_disk(obj, file, **kwargs):
            with open(file, 'wb') as handle:
                handle.write(b'partial')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), file)

        monkeypatch.setattr(mmengine.fileio, 'dump', full_disk)
    line = refused(capsys, eval_tool, [CLS_CONFIG, trained_checkpoints['classifier'], '--out',
                                       out, '--work-dir', tmp_path / 'work'])
    assert f'cannot write {out}: No space left on device [Errno 28]; free space or choose ' \
           'another --out' in line, line
    assert out.read_bytes() == b'results of an earlier test'
    assert no_temporaries(out_dir) == []


@pytest.mark.slow  # runs a whole test or training
def test_a_full_disk_while_a_checkpoint_is_written(finished_training, in_repo, tmp_path, tmpfs,
                                                   monkeypatch, capsys):
    import shutil

    size = (finished_training / 'epoch_1.pth').stat().st_size
    disk = tmpfs('disk', size=f'{2 * size + (4 << 20)}')
    work = (disk if disk is not None else tmp_path) / 'work'
    shutil.copytree(finished_training, work)
    previous = snapshot(work)
    if disk is not None:
        fill(disk, leave=2 << 20)  # room for the log, not for epoch_2.pth
    else:
        from repnext_mm.engine import atomic_checkpoint
        from repnext_mm.utils.fileio import atomic_write

        def full_disk(data, path, fsync=True):
            def half(tmp):
                with open(tmp, 'wb') as file:
                    file.write(data[:len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
            atomic_write(path, half)

        monkeypatch.setattr(atomic_checkpoint, 'atomic_write_bytes', full_disk)
    options = [o for o in TINY_TRAIN if not o.startswith('train_cfg.max_epochs')]
    line = refused(capsys, train_tool, [CLS_CONFIG, '--work-dir', work, '--resume',
                                        '--cfg-options', 'train_cfg.max_epochs=2', *options])
    assert f'cannot write {work / "epoch_2.pth"}: No space left on device [Errno 28]; free ' \
           'space or choose another --work-dir' in line, line
    assert not (work / 'epoch_2.pth').exists()
    assert snapshot(work)['epoch_1.pth'] == previous['epoch_1.pth']
    assert no_temporaries(work) == []


# ------------------------------------------------------------------------------------------
# A refused run on a finished run's folder touches nothing of it
# ------------------------------------------------------------------------------------------
@pytest.mark.slow  # runs a whole test or training
@pytest.mark.parametrize('case', ['test-wrong-checkpoint', 'train-refused-load-from'])
def test_a_refused_run_leaves_the_earlier_runs_record(case, finished_training, in_repo,
                                                      tmp_path, capsys):
    import torch
    import torchvision

    foreign = tmp_path / 'resnet18.pth'
    torch.save(torchvision.models.resnet18().state_dict(), foreign)
    before = snapshot(finished_training)
    folders = sorted(p.name for p in finished_training.iterdir())
    if case == 'test-wrong-checkpoint':
        argv = [CLS_CONFIG, foreign, '--work-dir', finished_training]
        line = refused(capsys, eval_tool, argv)
    else:
        argv = [CLS_CONFIG, '--work-dir', finished_training, '--cfg-options',
                f'load_from={foreign}', *TINY_TRAIN]
        line = refused(capsys, train_tool, argv)
    assert f'the weights in {foreign} do not fit' in line
    assert snapshot(finished_training) == before  # the saved config's bytes too
    assert sorted(p.name for p in finished_training.iterdir()) == folders


# ------------------------------------------------------------------------------------------
# mmseg's --out folder: complete or absent
# ------------------------------------------------------------------------------------------
SEG_FEW = ['--cfg-options', 'test_dataloader.dataset.indices=3']


@pytest.mark.slow  # runs a whole test or training
def test_mmseg_out_folder_appears_when_the_test_succeeded(trained_checkpoints, in_repo,
                                                          tmp_path, capsys):
    out = tmp_path / 'labels'
    out.mkdir()
    (out / 'notes.txt').write_text("the user's own file")
    status = run_cli(eval_tool, [str(SHAPES_CONFIGS['segmentor']),
                                 str(trained_checkpoints['segmentor']), '--out', str(out),
                                 '--work-dir', str(tmp_path / 'work'), *SEG_FEW])
    assert status == 0, capsys.readouterr().err[-3000:]
    assert len(list(out.glob('*.png'))) == 3 and (out / 'notes.txt').is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['labels', 'work']  # no staging left


@pytest.mark.slow  # two processes run a whole test
def test_mmseg_out_folder_gets_every_process_share(trained_checkpoints, tmp_path):
    # mmseg creates output_dir in the main process only; each process stages its own images.
    out = tmp_path / 'labels'
    result = run_tool_process('tools/dist_test.sh', SHAPES_CONFIGS['segmentor'],
                              trained_checkpoints['segmentor'], '2', '--out', out,
                              '--work-dir', tmp_path / 'work',
                              '--cfg-options', 'test_dataloader.dataset.indices=4',
                              env={'PORT': str(free_port())})
    assert result.returncode == 0, describe_process(result)
    assert len(list(out.glob('*.png'))) == 4  # two from each process
    assert sorted(p.name for p in tmp_path.iterdir()) == ['labels', 'work']  # no staging left


@pytest.mark.slow  # runs a whole test or training
def test_mmseg_out_folder_is_untouched_when_writing_fails(trained_checkpoints, in_repo,
                                                          tmp_path, monkeypatch, capsys):
    from PIL import Image

    out = tmp_path / 'labels'
    save = Image.Image.save
    written = []

    def fills_the_disk(image, path, *args, **kwargs):
        if written:  # the second label PNG finds the disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written.append(path)
        return save(image, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, 'save', fills_the_disk)
    line = refused(capsys, eval_tool, [SHAPES_CONFIGS['segmentor'],
                                       trained_checkpoints['segmentor'], '--out', out,
                                       '--work-dir', tmp_path / 'work', *SEG_FEW])
    assert f'cannot write {out}/' in line and '.png: No space left on device [Errno 28]' in line
    assert 'choose another --out' in line, line
    assert written and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['work']  # the staging folder is gone
