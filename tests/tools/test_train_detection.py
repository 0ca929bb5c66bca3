"""tools/train.py, tools/test.py and tools/dist_train.sh on Mask R-CNN (RepNeXt-M0, shapes data).

One short training run of the shapes config (the demo's setting, ``tools/run_demo.sh``, for 2 of
its 8 epochs), launched with ``tools/dist_train.sh`` as 2 CPU processes over gloo, is shared by
the multi-process, learning and test-tool checks. Resume and interruption checks use single-process runs of a few
iterations on a subset (``train_dataloader.dataset.indices``).

Subprocesses run with one OpenMP thread each (unless OMP_NUM_THREADS is set): on 2 shared
cores, 2 threads per process make a training step up to 10x slower as soon as anything else
runs (the threads spin-wait for each other).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from repnext_mm.cli import run_cli
from repnext_mm.engine.interrupt import TrainingInterrupted
from repnext_mm.models import RepNeXt
from tests.helpers import REPO, describe_process, free_port, load_tool, run_tool_process

train_tool = load_tool('tools/train.py').main
eval_tool = load_tool('tools/test.py').main
SHAPES_CONFIG = REPO / 'configs' / 'mmdet' / 'mask_rcnn_repnext_m0_fpn_shapes.py'
COCO_CONFIG = REPO / 'configs' / 'mmdet' / 'mask_rcnn_repnext_m0_fpn_1x_coco.py'
SHAPES_ROOT = REPO / 'data' / 'shapes'
SEED = ['randomness.seed=0']
# A few iterations on 8 training images (2 iterations per epoch at batch 4), no validation.
NO_VALIDATION = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']
TINY_RUN = ['train_dataloader.dataset.indices=8', *NO_VALIDATION, *SEED]

# Untrained, every detection is a guess: bbox/segm mAP 0.000. The shared run is the demo's
# (tools/run_demo.sh: the 200 training images, 2 processes x 2 images per step, seed 0) for 2
# epochs, its cosine schedule ending there; it measured bbox mAP 0.221 and segm mAP 0.243 on
# the 50 validation images (the demo's 8 epochs: 0.355 / 0.399). The thresholds sit at half of
# that: far above anything an untrained or non-learning model reaches, with room for other
# thread counts and BLAS builds.
UNTRAINED_AP_MAX = 0.01
TRAINED_BBOX_AP_MIN = 0.11
TRAINED_SEGM_AP_MIN = 0.12


def printed_metrics(result: subprocess.CompletedProcess) -> dict:
    """The metrics tools/test.py prints as its last ``test metrics: {...}`` line."""
    lines = [line for line in result.stdout.splitlines() if line.startswith('test metrics: ')]
    assert lines, describe_process(result)
    return json.loads(lines[-1][len('test metrics: '):])


def last_val_metrics(work_dir: Path) -> dict:
    """The metrics of the last validation of a training run (MMEngine's scalars.json)."""
    (scalars,) = work_dir.glob('*/vis_data/scalars.json')
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    evaluations = [r for r in records if any(k.startswith('coco/') for k in r)]
    assert evaluations, f'no validation in {scalars}'
    # One validation may be logged as several records (e.g. bbox and segm): merge its step's.
    last_step = evaluations[-1].get('step')
    merged: dict = {}
    for record in evaluations:
        if record.get('step') == last_step:
            merged.update(record)
    return merged


def load_checkpoint(path: Path) -> dict:
    # weights_only=True, as MMEngine's loader gets by default under torch >= 2.6: what a resume
    # or tools/test.py reads must load without unpickling arbitrary objects.
    return torch.load(path, map_location='cpu', weights_only=True)


# The demo's run, cut to its first SHARED_EPOCHS epochs with the cosine schedule ending there.
SHARED_EPOCHS = 2
SHARED_RUN = [f'train_cfg.max_epochs={SHARED_EPOCHS}', f'train_cfg.val_interval={SHARED_EPOCHS}',
              f'param_scheduler.1.end={SHARED_EPOCHS}',
              f'default_hooks.checkpoint.interval={SHARED_EPOCHS}']
# A safety net, not a measurement: the run took 388 s on a 2-core machine running three other
# test processes (the demo's idle step time, 1.4 s, predicts about 3 min). The learning test
# prints the time against it.
TRAINING_TIMEOUT = 1800


@pytest.fixture(scope='module')
def trained(shapes_data, tmp_path_factory) -> SimpleNamespace:
    """The shapes config trained by tools/dist_train.sh with 2 CPU processes (shared run)."""
    work_dir = tmp_path_factory.mktemp('shapes_train')
    started = time.perf_counter()
    # 2 processes x 2 images: the config's batch of 4 (so the same lr), in half the time.
    result = run_tool_process('tools/dist_train.sh', SHAPES_CONFIG, '2', '--work-dir', work_dir,
                              '--cfg-options', 'train_dataloader.batch_size=2', *SHARED_RUN, *SEED,
                              env={'PORT': str(free_port())}, timeout=TRAINING_TIMEOUT)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, describe_process(result)
    checkpoint = Path((work_dir / 'last_checkpoint').read_text().strip())
    return SimpleNamespace(work_dir=work_dir, checkpoint=checkpoint, seconds=seconds,
                           log=result.stdout + result.stderr, metrics=last_val_metrics(work_dir))


def save_untrained_checkpoint(path: Path) -> Path:
    """The shapes model as ``init_weights`` leaves it, saved the way MMEngine saves models."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(str(SHAPES_CONFIG))
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


@pytest.mark.slow
def test_training_learns_far_beyond_the_untrained_model(trained, tmp_path):
    untrained = save_untrained_checkpoint(tmp_path / 'untrained.pth')
    # Evaluated by tools/dist_test.sh with 2 CPU processes: checks that path too, in half the time.
    result = run_tool_process('tools/dist_test.sh', SHAPES_CONFIG, untrained, '2',
                      '--work-dir', tmp_path / 'eval', env={'PORT': str(free_port())})
    assert result.returncode == 0, describe_process(result)
    before, after = printed_metrics(result), trained.metrics
    print(f'bbox mAP untrained {before["coco/bbox_mAP"]:.3f} -> trained '
          f'{after["coco/bbox_mAP"]:.3f}; segm mAP {before["coco/segm_mAP"]:.3f} -> '
          f'{after["coco/segm_mAP"]:.3f} (training took {trained.seconds:.0f} s of its '
          f'{TRAINING_TIMEOUT} s timeout)')
    assert before['coco/bbox_mAP'] <= UNTRAINED_AP_MAX
    assert after['coco/bbox_mAP'] >= TRAINED_BBOX_AP_MIN
    assert after['coco/segm_mAP'] >= TRAINED_SEGM_AP_MIN


@pytest.mark.slow
def test_test_tool_reproduces_the_last_training_evaluation(trained, tmp_path):
    out = tmp_path / 'predictions.pkl'
    result = run_tool_process('tools/test.py', SHAPES_CONFIG, trained.checkpoint,
                      '--work-dir', tmp_path, '--out', out)
    assert result.returncode == 0, describe_process(result)
    metrics = printed_metrics(result)
    keys = [k for k in trained.metrics if k.startswith('coco/')]
    assert len(keys) == 6 + 6  # mAP, mAP_50, mAP_75, mAP_s, mAP_m, mAP_l for boxes and masks
    # Same weights, same images, deterministic CPU inference: the same numbers.
    assert {k: metrics[k] for k in keys} == {k: trained.metrics[k] for k in keys}

    import pickle
    with open(out, 'rb') as file:
        predictions = pickle.load(file)
    assert len(predictions) == 50  # one entry per validation image


@pytest.mark.slow
def test_resume_ends_with_the_weights_of_an_uninterrupted_run(shapes_data, tmp_path):
    straight, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    for work_dir, epochs, extra in ((straight, 2, []), (stopped, 1, []),
                                    (stopped, 2, ['--resume'])):
        result = run_tool_process('tools/train.py', SHAPES_CONFIG, '--work-dir', work_dir, *extra,
                          '--cfg-options', *TINY_RUN, f'train_cfg.max_epochs={epochs}')
        assert result.returncode == 0, describe_process(result)
    log = result.stdout + result.stderr
    assert 'resumed epoch: 1, iter: 2' in log, describe_process(result)
    assert 'restored the Python, NumPy and torch random number generator states' in log

    expected, resumed = load_checkpoint(straight / 'epoch_2.pth'), \
        load_checkpoint(stopped / 'epoch_2.pth')
    assert expected['meta']['iter'] == resumed['meta']['iter'] == 4
    assert expected['state_dict'].keys() == resumed['state_dict'].keys()
    different = [k for k, v in expected['state_dict'].items()
                 if not torch.equal(v, resumed['state_dict'][k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:5]}'
    # The optimizer continues too (AdamW moments and step counts).
    for expected_state, resumed_state in zip(expected['optimizer']['state'].values(),
                                             resumed['optimizer']['state'].values()):
        for name, value in expected_state.items():
            assert torch.equal(value, resumed_state[name])


@pytest.mark.slow
def test_dist_train_ran_two_cpu_processes_over_gloo(trained):
    if torch.cuda.is_available():
        pytest.skip('checks the CPU (gloo) path; with CUDA, dist_train.sh uses NCCL')
    assert 'Distributed training: True' in trained.log
    assert re.search(r"dist_cfg=dict\(backend='gloo'", (trained.work_dir /
                                                      SHAPES_CONFIG.name).read_text())
    # 200 images at 2 per process and step: 50 steps per epoch with 2 processes (one process
    # would need 100), so the data really was split between them; the total batch is the
    # config's 4, so auto_scale_lr leaves the lr alone.
    checkpoint = load_checkpoint(trained.checkpoint)
    assert checkpoint['meta']['iter'] == 50 * checkpoint['meta']['epoch']
    assert 'the current batch size is 4. Scaling the original LR by 1.0' in trained.log


@pytest.mark.slow
def test_interrupted_checkpoint_save_leaves_no_checkpoint(shapes_data, tmp_path, monkeypatch):
    # The interruption lands after the checkpoint bytes are written and before the file would
    # appear under its name: MMEngine's own backend writes in place (and never fsyncs, so it
    # would finish the run here instead of raising).
    def interrupted_fsync(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(os, 'fsync', interrupted_fsync)
    # The tool turns the interruption into one line that says how to resume.
    with pytest.raises(TrainingInterrupted, match='interrupted'):
        train_tool([str(SHAPES_CONFIG), '--work-dir', str(tmp_path), '--cfg-options',
               'train_dataloader.dataset.indices=4', 'train_cfg.max_epochs=1',
               *NO_VALIDATION, *SEED])
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.suffix in ('.pth', '.part'))
    assert leftovers == [], leftovers
    assert not (tmp_path / 'last_checkpoint').exists()


# ------------------------------------------------------------------------------------------
# Bad inputs: each gives one message that names the problem and the fix
# ------------------------------------------------------------------------------------------
def test_missing_config_exits_with_one_error_line():
    result = run_tool_process('tools/train.py', 'configs/mmdet/no_such_config.py')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: config file 'configs/mmdet/no_such_config.py' does not exist (relative to "
        f'{REPO}); the configs are under configs/mmdet, configs/mmseg and configs/mmpretrain')
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('tool, argv, expected', [
    (train_tool, ['--cfg-options', 'model.backbone.arch=m9'],
     ["model.backbone.arch: unknown RepNeXt arch 'm9'", str(sorted(RepNeXt.arch_settings))]),
    (eval_tool, ['missing.pth'], ["checkpoint 'missing.pth' does not exist"]),
    (train_tool, ['--resume', 'missing.pth'], ["--resume checkpoint 'missing.pth' does not exist"]),
    (train_tool, ['--cfg-options', 'val_evaluator.ann_file=data/shapes/coco/annotations/x.json'],
     ["annotation file of val_evaluator 'data/shapes/coco/annotations/x.json' does not exist",
      'python tools/data/make_shapes.py']),
], ids=['unknown-arch', 'missing-checkpoint', 'missing-resume-checkpoint', 'missing-ann-file'])
def test_bad_input_is_reported_with_its_fix(shapes_data, capsys, monkeypatch, tool, argv, expected):
    monkeypatch.chdir(REPO)
    assert run_cli(tool, [str(SHAPES_CONFIG), *argv]) == 2
    message = capsys.readouterr().err
    assert message.startswith('error: ') and message.count('\n') == 1
    for part in expected:
        assert part in message


def test_missing_data_root_says_how_to_make_the_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data/shapes/coco/ is relative: it does not exist here
    assert run_cli(train_tool, [str(SHAPES_CONFIG)]) == 2
    message = capsys.readouterr().err
    assert "data root of train_dataloader.dataset 'data/shapes/coco/' does not exist" in message
    assert 'python tools/data/make_shapes.py' in message


def test_missing_coco_says_where_coco_goes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli(train_tool, [str(COCO_CONFIG), '--cfg-options', 'model.backbone.init_cfg=None']) == 2
    message = capsys.readouterr().err
    assert "'data/coco/' does not exist" in message and 'put COCO 2017 there' in message


def test_missing_pretrained_file_names_the_ways_out(shapes_data, capsys, monkeypatch):
    # The COCO config with the shapes data: only the pretrained backbone file is missing.
    monkeypatch.chdir(REPO)
    argv = [str(COCO_CONFIG), '--cfg-options',
            'train_dataloader.dataset.data_root=data/shapes/coco/',
            'train_dataloader.dataset.ann_file=annotations/instances_train.json',
            'train_dataloader.dataset.data_prefix.img=train/',
            'val_dataloader.dataset.data_root=data/shapes/coco/',
            'val_dataloader.dataset.ann_file=annotations/instances_val.json',
            'val_dataloader.dataset.data_prefix.img=val/',
            'val_evaluator.ann_file=data/shapes/coco/annotations/instances_val.json']
    assert run_cli(train_tool, argv) == 2
    message = capsys.readouterr().err
    assert "pretrained weights 'checkpoints/repnext_m0_in1k_backbone.pth' do not exist" in message
    assert '--cfg-options model.backbone.init_cfg=None' in message


@pytest.mark.slow
def test_pretrained_checkpoint_matching_nothing_fails_naming_the_prefix(shapes_data, tmp_path,
                                                                         monkeypatch):
    checkpoint = tmp_path / 'classifier.pth'
    # A whole-classifier checkpoint whose keys lack the 'backbone.' prefix the config expects.
    torch.save({'state_dict': {'stem.0.conv.weight': torch.zeros(20, 3, 3, 3)}}, checkpoint)
    config = tmp_path / 'pretrained.py'
    config.write_text(f"_base_ = '{SHAPES_CONFIG}'\nmodel = dict(backbone=dict(init_cfg=dict("
                      f"_delete_=True, type='Pretrained', checkpoint='{checkpoint}', "
                      "prefix='backbone.')))\n")
    monkeypatch.chdir(REPO)
    with pytest.raises(ValueError, match=r"none of the weights in .*classifier\.pth match RepNeXt "
                                         r"after keeping the keys under prefix 'backbone\.'"):
        train_tool([str(config), '--work-dir', str(tmp_path / 'work'), '--cfg-options', *TINY_RUN])


@pytest.mark.slow
def test_images_below_32_pixels_fail_naming_the_minimum(shapes_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    tiny_images = ['train_dataloader.dataset.pipeline.2.scale=(16,16)',
                   'model.data_preprocessor.pad_size_divisor=1']
    with pytest.raises(ValueError, match=r'RepNeXt needs inputs of at least 32x32 pixels .* '
                                         r'got 16x16'):
        train_tool([str(SHAPES_CONFIG), '--work-dir', str(tmp_path), '--cfg-options', *TINY_RUN,
               *tiny_images])
