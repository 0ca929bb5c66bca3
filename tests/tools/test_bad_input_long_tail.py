"""tools/test.py and tools/train.py refuse bad input before MMEngine's runner exists.

Each case runs the tool in-process from a fresh folder (``data`` linked to the shapes data), so
the work folder is the default relative ``./work_dirs/<config>``, where a refused run once left
its dated log folder behind. Every case asserts exit status 2, exactly one ``error:`` line (no
traceback), no runner log (the environment and config dump go to stdout) and no ``work_dirs``.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, SHAPES_CONFIGS, run_tool
from tests.hub.test_weights import NAMES, publish, server  # noqa: F401  (server: a fixture)

CLS_CONFIG = SHAPES_CONFIGS['classifier']
IN1K_CONFIG = REPO / 'configs/mmpretrain/repnext_m0_8xb256_in1k.py'
TINY_TRAIN = ['train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=8',
              'train_dataloader.batch_size=4', 'val_cfg=None', 'val_dataloader=None',
              'val_evaluator=None']

pytestmark = pytest.mark.usefixtures('one_cpu_thread')


class RunsACommand:
    def __reduce__(self):
        return os.system, ('echo pwned',)


@pytest.fixture
def fresh_folder(tmp_path, monkeypatch, shapes_data) -> Path:
    """A new working folder whose ``data`` is the shapes data set (the configs' data root)."""
    folder = tmp_path / 'run'
    folder.mkdir()
    (folder / 'data').symlink_to(REPO / 'data', target_is_directory=True)
    monkeypatch.chdir(folder)
    return folder


def state_dict_of_config(config: Path, options: dict | None = None) -> dict:
    from repnext_mm.apis.model import build_model, load_model_config

    return build_model(load_model_config(config, options)).state_dict()


@pytest.fixture(scope='module')
def bad_checkpoints(tmp_path_factory, trained_checkpoints, releases) -> dict[str, Path]:
    """One file per way a checkpoint can be wrong for the shapes classifier."""
    import torchvision

    root = tmp_path_factory.mktemp('bad_checkpoints')
    m1_weights = state_dict_of_config(CLS_CONFIG, {'model.backbone.arch': 'm1',
                                                   'model.head.in_channels': 384})
    files = dict(
        tensor=torch.ones(3),
        resnet18=torchvision.models.resnet18().state_dict(),
        other_arch=dict(state_dict=m1_weights),
        # what tools/train.py writes, for another arch
        other_arch_run=dict(state_dict=m1_weights, meta=dict(epoch=1, iter=10),
                            message_hub=dict(log_scalars={}, runtime_info={})),
        head_1000=dict(state_dict=state_dict_of_config(IN1K_CONFIG)),
        blocked=dict(state_dict={'w': torch.ones(1)}, evil=RunsACommand()),
    )
    paths = {}
    for name, obj in files.items():
        paths[name] = root / f'{name}.pth'
        torch.save(obj, paths[name])
    paths['plain_pickle'] = root / 'plain.pkl'
    paths['plain_pickle'].write_bytes(pickle.dumps({'state_dict': {'w': [1.0, 2.0]}}, protocol=4))
    paths['folder'] = root / 'folder'
    paths['folder'].mkdir()
    paths['detector'] = trained_checkpoints['detector']
    paths['torchscript'] = releases['fused'].path
    return paths


def assert_one_line_and_nothing_left(status: int, out: str, err: str, folder: Path,
                                     *expected: str) -> str:
    assert status == 2, err
    assert 'Traceback' not in err, err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, err
    for part in expected:
        assert part in errors[0], errors[0]
    assert 'Environment' not in out + err and out.strip() == '', out[-2000:]
    assert not (folder / 'work_dirs').exists(), sorted(map(str, (folder / 'work_dirs').rglob('*')))
    return errors[0]


TEST_CASES = {
    'tensor': 'holds a Tensor, not a checkpoint',
    'resnet18': 'unexpected (e.g. conv1.weight',
    'other_arch': 'with the wrong shape (e.g. backbone.stem.0.conv.weight',
    'detector': 'unexpected (e.g. neck.',
    'head_1000': 'head.head.linear.weight: checkpoint (1000, 320) vs model (4, 320)',
    'blocked': 'refers to `posix.system`, which is not allowed',
    'plain_pickle': 'is a plain Python pickle (pickle.dump), not a PyTorch checkpoint',
    'folder': 'is a directory; pass the .pth file inside it',
    'torchscript': 'is a TorchScript archive',
}


@pytest.mark.parametrize('case', sorted(TEST_CASES))
def test_tools_test_refuses_a_checkpoint_before_the_runner(case, bad_checkpoints, fresh_folder,
                                                          capsys):
    status, out, err = run_tool('tools/test.py', [CLS_CONFIG, bad_checkpoints[case]], capsys)
    assert_one_line_and_nothing_left(status, out, err, fresh_folder, TEST_CASES[case])


TRAIN_CASES = {
    'load_from resnet18': (['--cfg-options', 'load_from={resnet18}'],
                           'unexpected (e.g. conv1.weight'),
    'load_from another head': (['--cfg-options', 'load_from={head_1000}'],
                               '--cfg-options load_from_allow_mismatch="[head.head.linear,'
                               'head.head_dist.linear]"'),
    'load_from blocked': (['--cfg-options', 'load_from={blocked}'], 'is not allowed'),
    'resume weights only': (['--resume', '{head_1000}'],
                            'is not a training checkpoint of tools/train.py'),
    'resume another arch': (['--resume', '{other_arch_run}'],
                            'with the wrong shape (e.g. backbone.stem.0.conv.weight'),
    'unknown type': (['--cfg-options', 'model.backbone.type=RepNeXtt'],
                     "model.backbone.type='RepNeXtt' is not a registered model type"),
    'out_indices abc': (['--cfg-options', 'model.backbone.out_indices=abc'],
                        "model.backbone.out_indices='abc'"),
    'out_indices 7': (['--cfg-options', 'model.backbone.out_indices=(0,1,2,7)'],
                      'stage 7 does not exist'),
    'max_epochz': (['--cfg-options', 'train_cfg.max_epochz=3'],
                   "train_cfg: EpochBasedTrainLoop has no argument 'max_epochz'; did you mean "
                   "'max_epochs'?"),
    'lr abc': (['--cfg-options', 'optim_wrapper.optimizer.lr=abc'],
               "optim_wrapper.optimizer.lr='abc' is not a number"),
    'data_root variable': (['--cfg-options', 'data_root=data/shape/coco/'],
                           'data_root is a variable of the config'),
}


@pytest.mark.parametrize('case', sorted(TRAIN_CASES))
def test_tools_train_refuses_before_the_runner(case, bad_checkpoints, fresh_folder, capsys):
    extra, expected = TRAIN_CASES[case]
    extra = [arg.format(**bad_checkpoints) for arg in extra]
    if extra[0] == '--cfg-options':
        argv = [CLS_CONFIG, '--cfg-options', *TINY_TRAIN, *extra[1:]]
    else:
        argv = [CLS_CONFIG, *extra, '--cfg-options', *TINY_TRAIN]
    status, out, err = run_tool('tools/train.py', argv, capsys)
    assert_one_line_and_nothing_left(status, out, err, fresh_folder, expected)


def test_a_variable_names_the_keys_that_hold_its_value(fresh_folder, capsys):
    status, out, err = run_tool('tools/train.py', [CLS_CONFIG, '--cfg-options', *TINY_TRAIN,
                                                   'data_root=data/other/'], capsys)
    line = assert_one_line_and_nothing_left(status, out, err, fresh_folder)
    assert 'train_dataloader.dataset.data_root, val_dataloader.dataset.data_root' in line
    assert "(the run would use 'data/shapes/imagenet')" in line
    assert 'e.g. --cfg-options train_dataloader.dataset.data_root=data/other/' in line


def test_a_part_the_runner_builds_still_leaves_no_dated_folder(fresh_folder, capsys):
    """A dataloader is built by the runner (after its log): the run's folder goes again."""
    status, out, err = run_tool('tools/train.py', [CLS_CONFIG, '--cfg-options', *TINY_TRAIN,
                                                   'train_dataloader.batch_size=0'], capsys)
    assert status == 2 and 'Traceback' not in err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert errors == ['error: train_dataloader.batch_size=0: batch_size should be a positive '
                      'integer value, but got batch_size=0'], err
    assert not (fresh_folder / 'work_dirs').exists()


@pytest.mark.parametrize('kind, expected', [(None, 'HTTP 404'),
                                            ('detector', 'unexpected (e.g. neck.')])
def test_a_release_url_that_fails_or_does_not_fit(kind, expected, server, releases,  # noqa: F811
                                                  fresh_folder, capsys):
    if kind is None:
        url = server.url('release/' + NAMES['imagenet'])  # nothing served there
    else:
        url = publish(server, NAMES[kind], releases[kind].path)
    status, out, err = run_tool('tools/test.py', [CLS_CONFIG, url], capsys)
    assert_one_line_and_nothing_left(status, out, err, fresh_folder, expected)


@pytest.mark.parametrize('data, problem', [(b'', 'is empty (0 bytes)'),
                                           (b'not an image', 'is not an image')])
def test_tools_infer_refuses_an_unreadable_image(data, problem, tmp_path, capsys):
    image = tmp_path / 'photo.jpg'
    image.write_bytes(data)
    status, out, err = run_tool('tools/infer.py', [image, 'repnext_m0_shapes',
                                                   '--out-dir', tmp_path / 'out'], capsys)
    assert status == 2 and 'Traceback' not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: input image {image} {problem}'), err
    assert not (tmp_path / 'out').exists()


KILLED_DURING_THE_WRITE = '''
import pathlib, runpy, sys, time, torch
ready, real_save = pathlib.Path(sys.argv[1]), torch.save
def save_then_hang(obj, file, *args, **kwargs):  # the whole file written, not yet renamed
    real_save(obj, file, *args, **kwargs)
    ready.touch()
    time.sleep(600)
torch.save = save_then_hang
sys.argv = ['tools/deploy/reparameterize.py', *sys.argv[2:]]
runpy.run_path('tools/deploy/reparameterize.py', run_name='__main__')
'''


@pytest.mark.slow  # a fresh process of the tool
def test_a_reparameterize_killed_while_writing_leaves_nothing_after_the_next_tool(
        trained_checkpoints, tmp_path, capsys):
    import signal
    import subprocess
    import sys
    import time

    out_dir = tmp_path / 'deploy'
    out_dir.mkdir()
    ready = tmp_path / 'ready'
    args = [CLS_CONFIG, trained_checkpoints['classifier'], out_dir / 'fused.pth',
            '--shape', '64', '64']
    child = subprocess.Popen([sys.executable, '-c', KILLED_DURING_THE_WRITE, ready, *args],
                             cwd=REPO, env={**os.environ, 'PYTHONPATH': str(REPO),
                                            'OMP_NUM_THREADS': '1'},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while not ready.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert ready.exists(), child.stderr.read().decode()[-3000:] if child.poll() else 'hung'
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stderr.close()
    [orphan] = os.listdir(out_dir)
    assert orphan.startswith('.fused.pth.') and orphan.endswith('.tmp.pth')
    # The next run of a tool in that folder, for another output, sweeps it.
    status, _, err = run_tool('tools/deploy/reparameterize.py',
                              [*args[:2], out_dir / 'other_fused.pth', *args[3:]], capsys)
    assert status == 0, err
    assert os.listdir(out_dir) == ['other_fused.pth']
