"""Atomic writes: a path holds its previous content or the whole new one, never a part."""
from __future__ import annotations

import errno
import glob
import os
import re
import signal
import stat
import time
from pathlib import Path

import pytest
import torch

from repnext_mm.utils.errors import InputError, OutputWriteError
from repnext_mm.utils.fileio import (STALE_TEMPORARY_AGE_S, atomic_torch_save, atomic_write,
                                     atomic_write_bytes, atomic_write_json, atomic_write_text,
                                     check_output_dir, check_output_path,
                                     remove_orphaned_temporaries, remove_stale_temporaries,
                                     temporary_path)

TEMPORARY_NAME = re.compile(r'\.out\.pth\.[0-9a-f]{8}\.pid\d+-[0-9a-f]{8}\.tmp\.pth')


def age(path: Path, seconds: float = 2 * STALE_TEMPORARY_AGE_S) -> Path:
    """Sets the mtime of ``path`` (and of everything in it) ``seconds`` into the past."""
    past = time.time() - seconds
    for entry in [path, *(path.rglob('*') if path.is_dir() else [])]:
        os.utime(entry, (past, past))
    return path


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / 'out.pth'

    def failing_writer(tmp):
        tmp.write_bytes(b'half written')
        raise RuntimeError('disk full')

    with pytest.raises(RuntimeError, match='disk full'):
        atomic_write(target, failing_writer)
    assert os.listdir(tmp_path) == []


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / 'out.txt'
    target.write_text('previous')
    with pytest.raises(ValueError):
        atomic_write(target, lambda tmp: (tmp.write_text('new'), (_ for _ in ()).throw(ValueError())))
    assert target.read_text() == 'previous'
    assert os.listdir(tmp_path) == ['out.txt']


def test_atomic_write_replaces_a_directory(tmp_path):
    target = tmp_path / 'model.mlpackage'
    (target / 'old').mkdir(parents=True)

    def writer(tmp):
        (tmp / 'new').mkdir(parents=True)

    atomic_write(target, writer)
    assert sorted(p.name for p in target.iterdir()) == ['new']
    assert os.listdir(tmp_path) == ['model.mlpackage']


def test_atomic_write_replaces_a_file_via_a_hidden_temporary_of_the_scheme(tmp_path):
    target = tmp_path / 'out.pth'
    target.write_bytes(b'old')
    seen = {}

    def writer(tmp: Path) -> None:
        seen['tmp'] = tmp
        # While the write is under way the target is still the old file, and globs for '*.pth'
        # (what checkpoint discovery uses) do not see the temporary.
        assert target.read_bytes() == b'old'
        tmp.write_bytes(b'new')
        seen['glob'] = glob.glob(str(tmp_path / '*.pth'))

    assert atomic_write(target, writer) == target
    assert target.read_bytes() == b'new'
    assert seen['tmp'].parent == tmp_path and TEMPORARY_NAME.fullmatch(seen['tmp'].name)
    assert seen['glob'] == [str(target)]
    assert os.listdir(tmp_path) == ['out.pth']


def test_file_and_directory_never_replace_each_other(tmp_path):
    folder = tmp_path / 'out.pth'
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match='is a directory'):
        atomic_write_bytes(b'x', folder)
    assert folder.is_dir() and os.listdir(tmp_path) == ['out.pth']

    file = tmp_path / 'model.mlpackage'
    file.write_text('a file')
    with pytest.raises(NotADirectoryError, match='is a file'):
        atomic_write(file, lambda tmp: tmp.mkdir())
    assert file.read_text() == 'a file'
    assert sorted(os.listdir(tmp_path)) == ['model.mlpackage', 'out.pth']


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='without creating'):
        atomic_write(tmp_path / 'out.txt', lambda tmp: None)
    assert os.listdir(tmp_path) == []


def test_helpers_write_their_formats_and_create_parents(tmp_path):
    nested = tmp_path / 'a' / 'b'
    atomic_write_text('héllo', nested / 'x.txt')
    assert (nested / 'x.txt').read_bytes() == 'héllo'.encode('utf-8')
    atomic_write_json({'b': 1, 'a': [2]}, nested / 'x.json')
    assert (nested / 'x.json').read_text() == '{\n  "b": 1,\n  "a": [\n    2\n  ]\n}\n'
    atomic_write_json({'b': 1, 'a': 2}, nested / 'y.json', indent=None, sort_keys=True,
                      separators=(',', ':'))
    assert (nested / 'y.json').read_text() == '{"a":2,"b":1}\n'
    atomic_torch_save({'w': torch.arange(3)}, nested / 'x.pth')
    assert torch.equal(torch.load(nested / 'x.pth')['w'], torch.arange(3))
    assert sorted(os.listdir(nested)) == ['x.json', 'x.pth', 'x.txt', 'y.json']


def test_torch_save_and_bytes_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic_write_bytes(b'checkpoint', tmp_path / 'a.pth')
    atomic_torch_save({'w': torch.ones(1)}, tmp_path / 'b.pth')
    assert len(synced) == 2


class TestStaleTemporaries:

    def test_cleaned_after_the_next_successful_write_of_the_same_target(self, tmp_path):
        target = tmp_path / 'out.pth'
        stale_file = temporary_path(target)
        stale_file.write_bytes(b'x' * 1000)  # what a SIGKILL during a write leaves
        stale_dir = temporary_path(target)  # ... or during the write of an .mlpackage
        (stale_dir / 'Data').mkdir(parents=True)
        (stale_dir / 'Data' / 'weights.bin').write_bytes(b'x')
        # Another target's temporaries and look-alike names are not this target's to delete.
        other = temporary_path(tmp_path / 'other.pth')
        near_misses = [other, *(tmp_path / name for name in (
            '.out.pth.deadbeef.tmp.pth.bak', '.out.pth.part', 'out.pth.deadbeef.tmp.pth',
            '.xout.pth.deadbeef.tmp.pth', '.out.pth.DEADBEEF.tmp.pth'))]
        for path in near_misses:
            path.write_bytes(b'z')
        for path in [stale_file, stale_dir, *near_misses]:
            age(path)

        atomic_write_bytes(b'new', target)
        remaining = sorted(os.listdir(tmp_path))
        assert stale_file.name not in remaining and stale_dir.name not in remaining
        assert remaining == sorted(['out.pth', *(p.name for p in near_misses)])

    def test_a_failed_write_cleans_nothing(self, tmp_path):
        target = tmp_path / 'out.pth'
        stale = temporary_path(target)
        stale.write_bytes(b'x')
        age(stale)
        with pytest.raises(RuntimeError):
            atomic_write(target, lambda tmp: (_ for _ in ()).throw(RuntimeError('fail')))
        assert os.listdir(tmp_path) == [stale.name]

    def test_a_young_temporary_may_be_a_concurrent_writer_and_is_kept(self, tmp_path):
        target = tmp_path / 'out.pth'
        live = temporary_path(target)
        live.write_bytes(b'being written by another process')
        old_but_touched = temporary_path(target)
        (old_but_touched / 'sub').mkdir(parents=True)
        age(old_but_touched)
        (old_but_touched / 'sub' / 'new.bin').write_bytes(b'written just now')  # deep write
        atomic_write_bytes(b'new', target)
        assert sorted(os.listdir(tmp_path)) == sorted(['out.pth', live.name, old_but_touched.name])
        # They were kept for their age alone: without the age limit both are this target's.
        removed = remove_stale_temporaries(target, min_age_s=0)
        assert sorted(removed) == sorted([live, old_but_touched])
        assert os.listdir(tmp_path) == ['out.pth']

    @pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
    @pytest.mark.own_process  # it forks
    def test_sigkill_during_a_write_leaves_a_temporary_that_the_next_write_removes(self, tmp_path):
        target = tmp_path / 'epoch_3.pth'
        target.write_bytes(b'previous')
        pid = os.fork()
        if pid == 0:  # child: killed in the middle of writing, so no cleanup code runs
            def killed(tmp: Path) -> None:
                tmp.write_bytes(b'partial')
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                atomic_write(target, killed)
            finally:
                os._exit(1)  # never reached; never return into pytest in the child
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        leftovers = [name for name in os.listdir(tmp_path) if name != 'epoch_3.pth']
        assert len(leftovers) == 1 and leftovers[0].startswith('.epoch_3.pth.')
        assert target.read_bytes() == b'previous'

        age(tmp_path / leftovers[0])
        atomic_write_bytes(b'complete', target)
        assert os.listdir(tmp_path) == ['epoch_3.pth']
        assert target.read_bytes() == b'complete'


def _atomic_local_put(data: bytes, path: Path) -> None:
    from mmengine.fileio import get_file_backend

    from repnext_mm.engine import ATOMIC_BACKEND_NAME
    get_file_backend(str(path), backend_args=dict(backend=ATOMIC_BACKEND_NAME)).put(data, path)


@pytest.mark.parametrize('writer', [
    lambda path: atomic_write_bytes(b'x', path),
    lambda path: atomic_write_text('x', path),
    lambda path: atomic_write_json([1], path),
    lambda path: atomic_torch_save({'w': torch.ones(1)}, path),
    lambda path: atomic_write(path, lambda tmp: tmp.write_bytes(b'x')),
    lambda path: _atomic_local_put(b'checkpoint', path),
], ids=['bytes', 'text', 'json', 'torch_save', 'callback', 'atomic_local_backend'])
@pytest.mark.parametrize('umask', [0o022, 0o002], ids=['umask022', 'umask002'])
def test_files_get_the_umask_default_mode_not_0600(tmp_path, writer, umask):
    old_umask = os.umask(umask)
    try:
        writer(tmp_path / 'out.pth')
        with open(tmp_path / 'plain.pth', 'w'):
            pass
    finally:
        os.umask(old_umask)
    mode = stat.S_IMODE((tmp_path / 'out.pth').stat().st_mode)
    assert mode == 0o666 & ~umask
    assert mode == stat.S_IMODE((tmp_path / 'plain.pth').stat().st_mode)


class TestCheckOutputPath:

    def test_refuses_existing_without_force(self, tmp_path):
        target = tmp_path / 'exists.pth'
        target.write_text('x')
        with pytest.raises(InputError, match='--force'):
            check_output_path(target, force=False)
        assert check_output_path(target, force=True) == target
        with pytest.raises(InputError, match='does not exist'):
            check_output_path(tmp_path / 'missing_dir' / 'out.pth', force=False)

    @pytest.mark.parametrize('force', [False, True])
    def test_a_directory_is_not_a_file_output_even_with_force(self, tmp_path, force):
        folder = tmp_path / 'out.pth'
        folder.mkdir()
        with pytest.raises(InputError) as error:
            check_output_path(folder, force=force)
        message = str(error.value)
        assert f'{folder} is a directory; pass a file path' in message
        assert 'already exists' not in message

    @pytest.mark.parametrize('force', [False, True])
    def test_a_file_is_not_a_directory_output_even_with_force(self, tmp_path, force):
        file = tmp_path / 'model.mlpackage'
        file.write_text('x')
        with pytest.raises(InputError, match='is a file, but this output is a directory'):
            check_output_path(file, force=force, kind='dir')

    def test_a_directory_output_replaces_a_directory_only_with_force(self, tmp_path):
        folder = tmp_path / 'model.mlpackage'
        folder.mkdir()
        with pytest.raises(InputError, match='already exists; pass --overwrite'):
            check_output_path(folder, force=False, flag='--overwrite', kind='dir')
        assert check_output_path(folder, force=True, kind='dir') == folder
        assert check_output_path(tmp_path / 'new.mlpackage', force=False, kind='dir') == \
            tmp_path / 'new.mlpackage'

    def test_parent_that_is_a_file(self, tmp_path):
        (tmp_path / 'file').write_text('x')
        with pytest.raises(InputError, match='output directory .*file is a file'):
            check_output_path(tmp_path / 'file' / 'out.pth', force=True)

    def test_unknown_kind_is_a_programming_error(self, tmp_path):
        with pytest.raises(ValueError, match="kind must be 'file' or 'dir'"):
            check_output_path(tmp_path / 'x', force=False, kind='folder')


class TestCheckOutputDir:
    """An output folder is checked before any work: wrong kind, or nowhere to write."""

    def test_a_new_folder_in_a_writable_place_passes_and_nothing_is_left(self, tmp_path):
        assert check_output_dir(tmp_path / 'a' / 'b', '--work-dir') == tmp_path / 'a' / 'b'
        assert list(tmp_path.iterdir()) == []  # the probe file is gone, no folder was made

    def test_an_existing_folder_passes(self, tmp_path):
        (tmp_path / 'old.txt').write_text('kept')
        check_output_dir(tmp_path, '--work-dir')
        assert [p.name for p in tmp_path.iterdir()] == ['old.txt']

    def test_a_file(self, tmp_path):
        (tmp_path / 'f').write_text('x')
        with pytest.raises(InputError, match=rf'--work-dir {tmp_path / "f"} is a file; choose'):
            check_output_dir(tmp_path / 'f', '--work-dir')

    def test_a_path_under_a_file(self, tmp_path):
        (tmp_path / 'f').write_text('x')
        with pytest.raises(InputError, match=f'lies under the file {tmp_path / "f"};'):
            check_output_dir(tmp_path / 'f' / 'run' / 'x', '--show-dir')

    def test_proc_cannot_take_a_folder(self):
        with pytest.raises(InputError, match=r'--work-dir /proc/run: cannot write into /proc '
                                             r'\(.* \[Errno \d+\]\); choose'):
            check_output_dir('/proc/run', '--work-dir')

    def test_a_read_only_file_system(self, tmpfs):
        read_only = tmpfs('ro', read_only=True)
        if read_only is None:
            pytest.skip('mounting a read-only tmpfs needs root (CAP_SYS_ADMIN)')
        with pytest.raises(InputError, match=r'cannot write into .*Read-only file system '
                                             r'\[Errno 30\]'):
            check_output_dir(read_only / 'run', '--work-dir')

    @pytest.mark.skipif(os.geteuid() == 0, reason='root writes into a 0o555 folder')
    def test_a_folder_without_write_permission(self, tmp_path):
        locked = tmp_path / 'locked'
        locked.mkdir(mode=0o555)
        with pytest.raises(InputError, match=r'Permission denied \[Errno 13\]'):
            check_output_dir(locked / 'run', '--work-dir')

    def test_as_root_a_0o555_folder_is_writable_and_passes(self, tmp_path):
        if os.geteuid() != 0:
            pytest.skip('only root may write into a 0o555 folder')
        locked = tmp_path / 'locked'
        locked.mkdir(mode=0o555)
        check_output_dir(locked / 'run', '--work-dir')
        assert list(locked.iterdir()) == []


class TestWriteErrors:
    """An OSError of the machine while writing names the final path; nothing partial is left."""

    @pytest.mark.parametrize('code', [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES])
    def test_names_the_final_path_and_keeps_the_previous_file(self, tmp_path, code):
        target = tmp_path / 'out.pth'
        target.write_bytes(b'previous')

        def failing_writer(tmp):
            tmp.write_bytes(b'half')
            raise OSError(code, os.strerror(code), str(tmp))  # names the temporary

        with pytest.raises(OutputWriteError) as raised:
            atomic_write(target, failing_writer)
        error = raised.value
        assert isinstance(error, InputError) and isinstance(error, OSError)
        assert (error.errno, error.filename) == (code, str(target))
        assert str(error).startswith(f'cannot write {target}: {os.strerror(code)} [Errno {code}]; ')
        assert '.tmp' not in str(error)
        assert os.listdir(tmp_path) == ['out.pth'] and target.read_bytes() == b'previous'

    def test_other_os_errors_pass_unchanged(self, tmp_path):
        def failing_writer(tmp):
            raise FileNotFoundError(errno.ENOENT, 'No such file or directory', 'input.json')

        with pytest.raises(FileNotFoundError) as raised:
            atomic_write(tmp_path / 'out.json', failing_writer)
        assert not isinstance(raised.value, OutputWriteError)

    def test_torch_save_on_a_full_disk_is_the_disk_s_error(self, tmp_path, tmpfs, monkeypatch):
        """torch.save into a file turns ENOSPC into "RuntimeError: unexpected pos"; the
        recorded OSError is what surfaces."""
        disk = tmpfs('disk', size='64k')
        if disk is None:  # no mount allowed: every write of the file fails as a full disk's
            from repnext_mm.utils import fileio

            class FullDisk:
                def __init__(self, path, mode):
                    self.file = open(path, mode)

                def write(self, data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                def __getattr__(self, name):
                    return getattr(self.file, name)

                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    self.file.close()

            monkeypatch.setattr(fileio, 'open', FullDisk, raising=False)
            disk = tmp_path
        target = disk / 'big.pth'
        with pytest.raises(OutputWriteError, match=rf'cannot write {target}: No space left on '
                                                   r'device \[Errno 28\]'):
            atomic_torch_save({'weights': torch.zeros(64 << 10)}, target)
        assert os.listdir(disk) == []

    def test_creating_the_parent_on_a_read_only_file_system(self, tmpfs):
        read_only = tmpfs('ro', read_only=True)
        if read_only is None:
            pytest.skip('mounting a read-only tmpfs needs root (CAP_SYS_ADMIN)')
        target = read_only / 'new' / 'out.json'
        with pytest.raises(OutputWriteError, match=rf'cannot write {target}: Read-only file '
                                                   r'system \[Errno 30\]'):
            atomic_write_json({}, target)

    def test_the_error_survives_pickling(self):
        import pickle

        error = OutputWriteError('/x/out.pth', OSError(errno.ENOSPC, 'No space left on device'),
                                 fix='free space or choose another --work-dir')
        copy = pickle.loads(pickle.dumps(error))
        assert (str(copy), copy.errno, copy.filename) == (str(error), 28, '/x/out.pth')


class TestOrphanedTemporaries:
    """A writer that is gone (its pid no longer runs on this machine) leaves no temporary for
    long: the next write into the folder, or the next tool's output check, removes it."""

    @staticmethod
    def killed_writer(target: Path, signum: int, cli: bool = False) -> int:
        """Forks a child that starts writing ``target`` and is killed by ``signum`` mid-write;
        returns its wait status."""
        ready = target.parent / 'ready.flag'
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)

                def writer(tmp: Path) -> None:
                    tmp.write_bytes(b'partial')
                    os.replace(_touch(target.parent / '.ready.tmp'), ready)
                    if signum == signal.SIGKILL:
                        os.kill(os.getpid(), signal.SIGKILL)
                    time.sleep(60)  # the parent sends SIGTERM meanwhile

                from repnext_mm.cli import run_cli
                if cli:
                    run_cli(lambda argv: atomic_write(target, writer))
                else:
                    atomic_write(target, writer)
            finally:
                os._exit(1)
        if signum != signal.SIGKILL:
            deadline = time.time() + 30
            while not ready.exists() and time.time() < deadline:
                time.sleep(0.01)
            os.kill(pid, signum)
        _, status = os.waitpid(pid, 0)
        ready.unlink(missing_ok=True)
        return status

    @pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
    @pytest.mark.own_process  # it forks and signals
    def test_a_killed_writer_leaves_nothing_for_long(self, tmp_path):
        target = tmp_path / 'model.fused.pth'
        # SIGTERM: a tool removes its temporary and still dies of the signal.
        status = self.killed_writer(target, signal.SIGTERM, cli=True)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
        assert os.listdir(tmp_path) == []
        # SIGKILL: nothing can run; the temporary names its dead writer ...
        status = self.killed_writer(target, signal.SIGKILL)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        [orphan] = os.listdir(tmp_path)
        assert orphan.startswith('.model.fused.pth.') and '.pid' in orphan
        # ... and any tool's next check of the folder removes it, for any output of its own;
        # a live writer's temporary (this process's, of another destination) is kept.
        live = temporary_path(tmp_path / 'other.pth')
        live.write_bytes(b'being written')
        check_output_path(tmp_path / 'unrelated.onnx', force=False)
        assert sorted(os.listdir(tmp_path)) == [live.name]

    def test_another_machines_temporary_is_left_to_the_age_rule(self, tmp_path):
        name = '.a.pth.0123abcd.pid999999-00000000.tmp.pth'  # not this host's tag
        (tmp_path / name).write_bytes(b'x')
        assert remove_orphaned_temporaries(tmp_path) == []
        assert os.listdir(tmp_path) == [name]


def _touch(path: Path) -> Path:
    path.write_bytes(b'')
    return path
