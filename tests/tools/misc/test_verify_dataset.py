"""tools/misc/verify_dataset.py: every file decoded, every bad one listed, exit 2 if any."""
from __future__ import annotations

import shutil

import pytest

from tests.helpers import REPO, SHAPES_CONFIGS, run_tool, single_error_line

TOOL = 'tools/misc/verify_dataset.py'


@pytest.fixture
def in_repo(monkeypatch, shapes_data):
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize('task', ['classifier', 'detector', 'segmentor'])
def test_good_data_exits_0_with_a_summary(task, in_repo, capsys):
    # Two (spawned) workers for one task, the in-process path for the others: the same checks.
    workers = 2 if task == 'classifier' else 1
    status, out, err = run_tool(TOOL, [SHAPES_CONFIGS[task], '--workers', workers], capsys)
    assert status == 0, err[-3000:]
    assert 'error:' not in err
    total = dict(classifier=250, detector=250, segmentor=500)[task]  # train + val (images, labels)
    assert out.startswith(f'all {total} files decode (train_dataloader.dataset, '
                          'val_dataloader.dataset) in ')
    assert 'test_dataloader.dataset: the same files as val_dataloader.dataset' in err
    assert f'/{total - (50 if task != "segmentor" else 100)}' in err  # the bar's train count


def test_every_bad_file_is_listed_then_one_error_line(in_repo, shapes_data, tmp_path, capsys):
    root = tmp_path / 'imagenet'
    shutil.copytree(shapes_data / 'imagenet' / 'val', root / 'val')
    square = sorted((root / 'val' / 'square').iterdir())
    square[0].write_bytes(b'')  # quick check finds it
    square[1].write_bytes(square[1].read_bytes()[:100])  # only decoding finds it
    square[2].write_text('text')
    status, out, err = run_tool(TOOL, [
        SHAPES_CONFIGS['classifier'], '--split', 'test', '--workers', 2, '--no-progress',
        '--cfg-options', f'test_dataloader.dataset.data_root={root}'], capsys)
    assert status == 2
    assert out.splitlines() == [
        f'image {square[0]} is empty (0 bytes)',
        f'image {square[1]} cannot be decoded as an image (100 bytes; corrupt or truncated)',
        f"image {square[2]} is not an image: it starts with b'text', the signature of no image "
        'format']
    assert single_error_line(err) == ('error: 3 of 50 files in test_dataloader.dataset are '
                                      'unreadable (listed above); replace or remove them')


def test_a_structural_problem_is_one_line(in_repo, shapes_data, tmp_path, capsys):
    root = tmp_path / 'imagenet'
    shutil.copytree(shapes_data / 'imagenet' / 'val', root / 'val')
    shutil.rmtree(root / 'val' / 'star')
    status, out, err = run_tool(TOOL, [
        SHAPES_CONFIGS['classifier'], '--split', 'test', '--cfg-options',
        f'test_dataloader.dataset.data_root={root}'], capsys)
    assert status == 2 and out == ''
    assert f'class folder {root}/val/star is missing' in single_error_line(err)


def test_workers_must_be_positive(in_repo, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_tool(TOOL, [SHAPES_CONFIGS['classifier'], '--workers', 0], capsys)
    assert exit_.value.code == 2
    assert 'must be at least 1, got 0' in single_error_line(capsys.readouterr().err)
