"""Atomic writes and safe checkpoint loading."""
import argparse
import os
import pickle

import pytest
import torch

from repnext_mm.deploy.errors import DeployError
from repnext_mm.deploy.io import (UNSAFE_FLAG, atomic_torch_save, atomic_write, check_output_path,
                                  load_checkpoint_file)


class NotAllowListed:
    """A class no allow-list contains: unpickling it needs full (unsafe) unpickling."""

    def __init__(self, value: int = 3) -> None:
        self.value = value


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


def test_check_output_path_refuses_existing_without_force(tmp_path):
    target = tmp_path / 'exists.pth'
    target.write_text('x')
    with pytest.raises(DeployError, match='--force'):
        check_output_path(target, force=False)
    assert check_output_path(target, force=True) == target
    with pytest.raises(DeployError, match='does not exist'):
        check_output_path(tmp_path / 'missing_dir' / 'out.pth', force=False)


def test_namespace_under_args_loads_with_weights_only(tmp_path):
    path = tmp_path / 'release.pth'
    args = argparse.Namespace(model='repnext_m1', lr=1e-3, input_size=224)
    torch.save(dict(model={'w': torch.ones(2)}, args=args, epoch=299), path)
    loaded = load_checkpoint_file(path)
    assert isinstance(loaded['args'], argparse.Namespace)
    assert loaded['args'].model == 'repnext_m1'
    assert torch.equal(loaded['model']['w'], torch.ones(2))


def test_unknown_class_is_refused_unless_unsafe_is_asked_for(tmp_path):
    path = tmp_path / 'custom.pth'
    torch.save(dict(model={'w': torch.ones(1)}, extra=NotAllowListed()), path)
    with pytest.raises(DeployError) as error:
        load_checkpoint_file(path)
    assert UNSAFE_FLAG in str(error.value)
    assert 'NotAllowListed' in str(error.value)
    assert load_checkpoint_file(path, unsafe_full_unpickle=True)['extra'].value == 3


@pytest.mark.parametrize('damage', ['empty', 'truncated', 'garbage', 'missing'])
def test_damaged_files_give_clear_errors(tmp_path, damage):
    good = tmp_path / 'good.pth'
    atomic_torch_save(dict(state_dict={'w': torch.randn(64, 64)}), good)
    bad = tmp_path / 'bad.pth'
    if damage == 'empty':
        bad.write_bytes(b'')
        expected = 'empty'
    elif damage == 'truncated':
        bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
        expected = 'corrupt or truncated'
    elif damage == 'garbage':
        bad.write_bytes(pickle.dumps('not a checkpoint')[:5] + b'\x00' * 100)
        expected = 'not a readable PyTorch checkpoint'
    else:
        expected = 'does not exist'
    with pytest.raises(DeployError, match=expected):
        load_checkpoint_file(bad)
