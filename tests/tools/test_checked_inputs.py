"""tools/test.py and tools/train.py refuse what they cannot load: one ``error:`` line, exit 2.

Every case asserts the exit status, the single error line (no traceback) and that no work
folder is left behind. Runs use the shapes classifier (64x64 images, 50 validation images):
the cheapest real model that ``tools/test.py`` scores.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from repnext_mm.deploy.reparameterize import reparameterize_checkpoint
from repnext_mm.cli import run_cli
from tests.helpers import REPO, SHAPES_CONFIGS, first_quick_rest_slow, load_tool, run_tool_process

CLS_CONFIG = SHAPES_CONFIGS['classifier']
DET_CONFIG = SHAPES_CONFIGS['detector']
TINY_TRAIN = ['train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=8',
              'train_dataloader.batch_size=4', 'val_cfg=None', 'val_dataloader=None',
              'val_evaluator=None', 'randomness.seed=0']


pytestmark = pytest.mark.usefixtures('one_cpu_thread')
train_tool = load_tool('tools/train.py').main
eval_tool = load_tool('tools/test.py').main


class RunsACommand:
    def __reduce__(self):
        return os.system, ('echo pwned',)


class UnknownClass:
    pass


@pytest.fixture
def in_repo(monkeypatch, shapes_data):
    monkeypatch.chdir(REPO)


def one_error_line(capsys) -> str:
    """The single ``error:`` line on stderr (other stderr lines are log notes, never errors)."""
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, err
    return errors[0]


def assert_refused(capsys, tool, argv, work_dir: Path, *expected: str) -> str:
    assert run_cli(tool, [*argv, '--work-dir', str(work_dir)]) == 2
    line = one_error_line(capsys)
    for part in expected:
        assert part in line, line
    assert not work_dir.exists(), sorted(p.name for p in work_dir.rglob('*'))
    return line


def saved(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


# ------------------------------------------------------------------------------------------
# tools/test.py: wrong and right checkpoints
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def classifier_metrics(trained_checkpoints, shapes_data, tmp_path_factory) -> dict:
    work_dir = tmp_path_factory.mktemp('cls_test')
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        metrics = eval_tool([str(CLS_CONFIG), str(trained_checkpoints['classifier']),
                        '--work-dir', str(work_dir)])
    finally:
        os.chdir(cwd)
    return metrics


def test_the_right_checkpoint_is_scored(classifier_metrics):
    assert 0.0 <= classifier_metrics['accuracy/top1'] <= 100.0


def test_a_fused_checkpoint_is_scored_with_its_recorded_deploy_options(
        trained_checkpoints, classifier_metrics, in_repo, tmp_path, capsys):
    fused = tmp_path / 'fused.pth'
    reparameterize_checkpoint(CLS_CONFIG, trained_checkpoints['classifier'], fused, shape=(64, 64),
                              log=lambda line: None)
    metrics = eval_tool([str(CLS_CONFIG), str(fused), '--work-dir', str(tmp_path / 'work')])
    assert metrics == classifier_metrics
    assert 'is a fused checkpoint: building the fused model with model.backbone.deploy=True ' \
           'model.head.deploy=True' in capsys.readouterr().err


def test_fused_weights_without_meta_name_the_deploy_options(trained_checkpoints, in_repo,
                                                            tmp_path, capsys):
    fused = tmp_path / 'fused.pth'
    reparameterize_checkpoint(CLS_CONFIG, trained_checkpoints['classifier'], fused, shape=(64, 64),
                              log=lambda line: None)
    bare = saved(tmp_path / 'bare.pth', dict(state_dict=torch.load(fused)['state_dict']))
    assert_refused(capsys, eval_tool, [str(CLS_CONFIG), str(bare)], tmp_path / 'work',
                   f'the weights in {bare} do not fit', 'missing', 'unexpected',
                   'model.backbone.deploy=True')


def test_a_foreign_model_is_refused(in_repo, tmp_path, capsys):
    import torchvision

    resnet = saved(tmp_path / 'resnet18.pth', torchvision.models.resnet18().state_dict())
    line = assert_refused(capsys, eval_tool, [str(CLS_CONFIG), str(resnet)], tmp_path / 'work',
                          'do not fit', 'unexpected (e.g. conv1.weight', 'missing (e.g. ')
    assert len(line) < 700


def test_a_1000_class_head_on_a_4_class_config_is_refused(trained_checkpoints, in_repo,
                                                          tmp_path, capsys):
    checkpoint = torch.load(trained_checkpoints['classifier'])
    state = checkpoint['state_dict']
    for key in [k for k in state if k.startswith('head.') and state[k].shape[:1] == (4,)]:
        state[key] = torch.zeros(1000, *state[key].shape[1:])
    wide = saved(tmp_path / 'in1k.pth', checkpoint)
    assert_refused(capsys, eval_tool, [str(CLS_CONFIG), str(wide)], tmp_path / 'work',
                   'with the wrong shape (e.g. head.', 'checkpoint (1000,', 'vs model (4,')


BAD_FILES = [
    ('missing', 'does not exist'),
    ('empty', 'is empty (0 bytes)'),
    ('truncated', 'corrupt or truncated'),
    ('random-bytes', 'corrupt or truncated'),
    ('bare-tensor', 'holds a Tensor, not a checkpoint'),
    ('foreign-model', 'do not fit'),
    ('runs-a-command', '.system`, which is not allowed'),
    ('unknown-class', 'UnknownClass`, which is not allowed'),
]


def write_bad_file(path: Path, case: str, good: Path) -> Path:
    if case == 'empty':
        path.write_bytes(b'')
    elif case == 'truncated':
        path.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    elif case == 'random-bytes':
        path.write_bytes(os.urandom(1 << 14))
    elif case == 'bare-tensor':
        torch.save(torch.ones(3), path)
    elif case == 'foreign-model':
        torch.save(dict(state_dict={'fc.weight': torch.ones(2, 2)},
                        meta=dict(epoch=1, iter=7), message_hub={}), path)
    elif case == 'runs-a-command':
        torch.save(dict(state_dict={}, meta=RunsACommand()), path)
    elif case == 'unknown-class':
        torch.save(dict(state_dict={}, meta=UnknownClass()), path)
    return path


@pytest.mark.parametrize('case, expected', BAD_FILES, ids=[case for case, _ in BAD_FILES])
def test_bad_checkpoint_files_in_test(trained_checkpoints, in_repo, tmp_path, capsys, case,
                                      expected):
    path = write_bad_file(tmp_path / 'bad.pth', case, trained_checkpoints['classifier'])
    line = assert_refused(capsys, eval_tool, [str(CLS_CONFIG), str(path)], tmp_path / 'work',
                          expected)
    assert 'weights_only' not in line


# Each case goes through the reader test_bad_checkpoint_files_in_test checks: the quick tier sends
# one through train.py, the full suite every one.
@pytest.mark.parametrize('option', first_quick_rest_slow(['--resume', 'load_from']))
@pytest.mark.parametrize('case, expected', [
    BAD_FILES[0], *(pytest.param(*case, marks=pytest.mark.slow) for case in BAD_FILES[1:])],
    ids=[case for case, _ in BAD_FILES])
def test_bad_checkpoint_files_in_train(trained_checkpoints, in_repo, tmp_path, capsys, case,
                                       expected, option):
    path = write_bad_file(tmp_path / 'bad.pth', case, trained_checkpoints['classifier'])
    argv = (['--resume', str(path), '--cfg-options'] if option == '--resume' else
            ['--cfg-options', f'load_from={path}'])
    line = assert_refused(capsys, train_tool, [str(CLS_CONFIG), *argv, *TINY_TRAIN],
                          tmp_path / 'work', expected)
    assert 'weights_only' not in line


def test_out_that_is_a_directory_is_refused_before_the_run(trained_checkpoints, in_repo,
                                                           tmp_path, capsys):
    out = tmp_path / 'results'
    out.mkdir()
    assert_refused(capsys, eval_tool, [str(CLS_CONFIG), str(trained_checkpoints['classifier']),
                                  '--out', str(out)], tmp_path / 'work',
                   f"--out '{out}' is a directory")


# ------------------------------------------------------------------------------------------
# tools/train.py: --resume and load_from
# ------------------------------------------------------------------------------------------
def test_resume_from_weights_without_training_state(trained_checkpoints, in_repo, tmp_path,
                                                    capsys):
    weights = saved(tmp_path / 'weights.pth',
                    dict(state_dict=torch.load(trained_checkpoints['classifier'])['state_dict']))
    assert_refused(capsys, train_tool, [str(CLS_CONFIG), '--resume', str(weights), '--cfg-options',
                                   *TINY_TRAIN], tmp_path / 'work',
                   'is not a training checkpoint', f'load_from={weights}')


def test_a_partial_load_the_config_asks_for_trains_and_is_logged(trained_checkpoints, in_repo,
                                                                 tmp_path, capsys):
    checkpoint = torch.load(trained_checkpoints['classifier'])
    state = checkpoint['state_dict']
    for key in [k for k in state if k.startswith('head.') and state[k].shape[:1] == (4,)]:
        state[key] = torch.zeros(10, *state[key].shape[1:])  # a head for 10 classes
    ten_classes = saved(tmp_path / 'ten.pth', dict(state_dict=state))
    work = tmp_path / 'work'
    assert run_cli(train_tool, [str(CLS_CONFIG), '--work-dir', str(work), '--cfg-options',
                           f'load_from={ten_classes}', "load_from_allow_mismatch=['head']",
                           *TINY_TRAIN]) == 0
    logs = ''.join(p.read_text() for p in work.glob('*/*.log'))
    assert f"partial load of {ten_classes} (allowed for 'head')" in logs
    assert 'with the wrong shape (head.' in logs  # every re-initialised entry, named
    assert (work / 'epoch_1.pth').is_file()


# ------------------------------------------------------------------------------------------
# Config mistakes
# ------------------------------------------------------------------------------------------
def test_config_syntax_error(in_repo, tmp_path, capsys):
    config = tmp_path / 'broken.py'
    config.write_text("_base_ = ['x.py'\nmodel = dict(\n")
    assert_refused(capsys, train_tool, [str(config)], tmp_path / 'work',
                   f'config {config}, line', 'syntax error')


def test_cfg_option_without_equals(in_repo, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(eval_tool, [str(CLS_CONFIG), 'x.pth', '--cfg-options', 'train_cfg.max_epochs'])
    assert exit_.value.code == 2
    line = one_error_line(capsys)
    assert "'train_cfg.max_epochs' is not KEY=VALUE" in line


def test_an_argument_the_model_does_not_take(in_repo, tmp_path, capsys):
    assert_refused(capsys, train_tool, [str(DET_CONFIG), '--cfg-options', 'model.backbone.archh=m0'],
                   tmp_path / 'work',
                   "model.backbone: RepNeXt has no argument 'archh'; did you mean 'arch'?")


# ------------------------------------------------------------------------------------------
# As a user sees it: a fresh process prints exactly one line on stderr
# ------------------------------------------------------------------------------------------
@pytest.mark.slow  # two fresh processes, each importing the whole stack
@pytest.mark.parametrize('argv', [
    ['tools/test.py', str(CLS_CONFIG), 'resnet.pth'],
    ['tools/train.py', str(DET_CONFIG), '--cfg-options', 'model.backbone.archh=m0'],
], ids=['test-foreign-checkpoint', 'train-unknown-argument'])
def test_a_fresh_process_prints_only_the_error(shapes_data, tmp_path, argv):
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / 'resnet.pth')
    argv = [str(tmp_path / a) if a == 'resnet.pth' else a for a in argv]
    result = run_tool_process(*argv, '--work-dir', tmp_path / 'work', timeout=600,
                              env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-3000:]
    assert not (tmp_path / 'work').exists()
