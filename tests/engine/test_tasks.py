"""The library-specific steps of tools/train.py and tools/test.py."""
from __future__ import annotations

import pytest
from mmengine.config import Config

from repnext_mm.apis.config import SUPPORTED_SCOPES
from repnext_mm.engine.tasks import TASK_ADAPTERS, StagedFolder, enable_auto_scale_lr
from repnext_mm.utils.errors import InputError


def test_every_supported_scope_has_an_adapter():
    assert set(TASK_ADAPTERS) == set(SUPPORTED_SCOPES)


@pytest.mark.parametrize('scope, hook, expected', [
    ('mmdet', dict(type='DetVisualizationHook'), dict(draw=True, test_out_dir='shown')),
    ('mmseg', dict(type='SegVisualizationHook'), dict(draw=True, interval=1)),
    ('mmpretrain', dict(type='VisualizationHook'), dict(enable=True, out_dir='shown')),
])
def test_show_dir_switches_on_each_librarys_visualization(scope, hook, expected):
    cfg = Config(dict(default_scope=scope, default_hooks=dict(visualization=hook),
                      visualizer=dict(type='Visualizer')))
    TASK_ADAPTERS[scope].show_dir(cfg, 'shown')
    for key, value in expected.items():
        assert cfg.default_hooks.visualization[key] == value
    if scope == 'mmseg':
        assert cfg.visualizer.save_dir == 'shown'


def test_show_dir_without_visualization_hook_is_an_error():
    with pytest.raises(InputError, match='visualization hook'):
        TASK_ADAPTERS['mmdet'].show_dir(Config(dict(default_hooks=dict())), 'shown')


def test_auto_scale_lr_needs_a_base_batch_size():
    cfg = Config(dict(auto_scale_lr=dict(enable=False, base_batch_size=16)))
    enable_auto_scale_lr(cfg)
    assert cfg.auto_scale_lr.enable is True
    with pytest.raises(InputError, match='base_batch_size'):
        enable_auto_scale_lr(Config(dict()))


@pytest.mark.parametrize('scope', ['mmdet', 'mmpretrain'])
def test_the_pickle_dump_is_atomic(scope, tmp_path, monkeypatch):
    import mmengine.fileio

    out = tmp_path / 'res.pkl'
    out.write_bytes(b'previous results')

    class Evaluator:
        metrics = []

    class Runner:
        test_evaluator = Evaluator()

    TASK_ADAPTERS[scope].out_to_runner(Runner, str(out))
    metric = Runner.test_evaluator.metrics[-1]

    def full_disk(obj, file, **kwargs):
        with open(file, 'wb') as f:
            f.write(b'trunc')
        raise OSError(28, 'No space left on device', file)

    monkeypatch.setattr(mmengine.fileio, 'dump', full_disk)
    with pytest.raises((OSError, InputError), match='No space left on device'):
        metric.compute_metrics([{'pred': 1}])
    assert out.read_bytes() == b'previous results'
    assert [p.name for p in tmp_path.iterdir()] == ['res.pkl']
    monkeypatch.undo()
    assert metric.compute_metrics([{'pred': 1}]) == {}
    assert mmengine.fileio.load(str(out)) == [{'pred': 1}]


def test_a_staged_folder_appears_only_on_commit_and_keeps_other_files(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'a.png').write_bytes(b'old a')
    (out / 'mine.txt').write_text('the user\'s own file')
    staged = StagedFolder(out)
    (staged.staging / 'sub').mkdir(parents=True)
    (staged.staging / 'a.png').write_bytes(b'new a')
    (staged.staging / 'sub' / 'b.png').write_bytes(b'new b')
    assert (out / 'a.png').read_bytes() == b'old a'  # nothing visible before the commit
    staged.commit()
    staged.abort()  # what the caller's finally does: a no-op now
    assert (out / 'a.png').read_bytes() == b'new a'
    assert (out / 'sub' / 'b.png').read_bytes() == b'new b'
    assert (out / 'mine.txt').is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_an_aborted_staged_folder_leaves_nothing(tmp_path):
    staged = StagedFolder(tmp_path / 'out')
    # Created at once: in a multi-process run the library creates it in the main process only.
    assert staged.staging.is_dir()
    (staged.staging / 'a.png').write_bytes(b'half')
    staged.abort()
    assert list(tmp_path.iterdir()) == []


def test_mmseg_out_goes_through_a_staged_folder(tmp_path):
    cfg = Config(dict(test_evaluator=dict(type='IoUMetric')))
    staged = TASK_ADAPTERS['mmseg'].out_to_config(cfg, str(tmp_path / 'out'))
    assert cfg.test_evaluator.output_dir == str(staged.staging)
    assert staged.staging.parent == tmp_path and staged.staging.name.startswith('.out.')


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_a_show_dir_that_is_a_file_is_refused(scope, tmp_path):
    (tmp_path / 'shown').write_text('x')
    with pytest.raises(InputError, match='--show-dir .*shown is a file'):
        TASK_ADAPTERS[scope].check_show_dir(str(tmp_path / 'shown'))


def test_a_relative_mmdet_show_dir_lands_in_the_new_log_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'shown').write_text('x')  # not where mmdet draws: <work_dir>/<timestamp>/shown
    TASK_ADAPTERS['mmdet'].check_show_dir('shown')
    with pytest.raises(InputError, match='is a file'):
        TASK_ADAPTERS['mmpretrain'].check_show_dir('shown')
