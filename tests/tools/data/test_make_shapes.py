"""tools/data/make_shapes.py: the command line over repnext_mm/datasets/make_shapes.py (whose
data are tested in tests/datasets/test_make_shapes.py)."""
from __future__ import annotations

import json

import pytest

from repnext_mm.cli import run_cli
from tests.helpers import load_tool

make_shapes = load_tool('tools/data/make_shapes.py')
TINY = ['--num-train', '2', '--num-val', '1', '--img-size', '64', '--cls-img-size', '32']


@pytest.mark.parametrize('args, message', [
    (['--num-train', '0'], '--num-train'),
    (['--img-size', '16'], '--img-size'),
    (['--seed', '-1'], '--seed'),
])
def test_bad_arguments_are_one_error_line_and_write_nothing(args, message, tmp_path, capsys):
    assert run_cli(make_shapes.main, ['--root', str(tmp_path / 'x'), '--quiet', *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and message in err
    assert not (tmp_path / 'x').exists()


def test_foreign_root_is_refused_until_forced(tmp_path, capsys):
    root = tmp_path / 'precious'
    root.mkdir()
    (root / 'mine.txt').write_text('not generated')
    args = ['--root', str(root), '--quiet', *TINY]
    assert run_cli(make_shapes.main, args) == 2
    assert '--force' in capsys.readouterr().err
    assert run_cli(make_shapes.main, [*args, '--force']) == 0
    assert (root / 'mine.txt').exists()  # only the coco, ade and imagenet folders are replaced


def test_generates_the_spec_then_reports_up_to_date(tmp_path, capsys):
    root = tmp_path / 'cli'
    args = ['--root', str(root), '--quiet', '--seed', '5', *TINY]
    assert run_cli(make_shapes.main, args) == 0
    manifest = json.loads((root / 'manifest.json').read_text())
    assert manifest['spec'] == dict(seed=5, num_train=2, num_val=1, img_size=64, cls_img_size=32)
    capsys.readouterr()
    assert run_cli(make_shapes.main, args) == 0
    assert 'up to date' in capsys.readouterr().out


def test_an_up_to_date_root_is_not_probed_for_writing(tmp_path, monkeypatch, capsys):
    """A finished data set may live on a read-only mount: only a root to write into is checked
    (tests/tools/test_bad_tool_outputs.py has a file as --root)."""
    from repnext_mm.datasets import make_shapes as generator

    args = ['--root', str(tmp_path / 'shapes'), '--quiet', *TINY]
    assert run_cli(make_shapes.main, args) == 0

    def refuse(path, what):
        raise AssertionError(f'{what} {path} was probed')

    monkeypatch.setattr(generator, 'check_output_dir', refuse)
    capsys.readouterr()
    assert run_cli(make_shapes.main, args) == 0
    assert 'up to date' in capsys.readouterr().out
