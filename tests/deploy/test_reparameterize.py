"""Reparameterizing trained classifier / Mask R-CNN / Semantic FPN checkpoints of the real configs.

Round trip: fuse a "trained" checkpoint, build the same config with the printed deploy options,
load the fused file with ``strict=True`` through MMEngine's own loader and compare the outputs
with the original model's. Then every bad input must fail with its own message and write nothing.
"""
from __future__ import annotations

import argparse
import os

import pytest
import torch
from mmengine.config import DictAction
from mmengine.runner import load_checkpoint
from torch.nn.modules.batchnorm import _BatchNorm

from repnext_mm.apis.model import build_model, load_model_config
from repnext_mm.deploy.verify import compare_outputs, example_inputs, tensor_forward
from repnext_mm.utils.errors import InputError
from repnext_mm.apis.checkpoint import read_checkpoint
from repnext_mm.deploy.reparameterize import reparameterize_checkpoint
from tests.helpers import SHAPES_CONFIGS, SHAPES_INPUT_SIZES, first_quick_rest_slow

EXPECTED_OPTIONS = dict(
    classifier='model.backbone.deploy=True model.head.deploy=True',
    detector='model.backbone.deploy=True',
    segmentor='model.backbone.deploy=True',
)


def parse_cfg_options(text: str) -> dict:
    """Parses a printed ``--cfg-options`` string exactly as the training/test tools do."""
    namespace = argparse.Namespace()
    DictAction(option_strings=[], dest='cfg_options')(None, namespace, text.split())
    return namespace.cfg_options


@pytest.mark.parametrize('task', first_quick_rest_slow(['classifier', 'detector', 'segmentor']))
def test_round_trip(task, trained_checkpoints, tmp_path):
    config, checkpoint = SHAPES_CONFIGS[task], trained_checkpoints[task]
    out = tmp_path / 'fused.pth'
    lines = []
    result = reparameterize_checkpoint(config, checkpoint, out, shape=SHAPES_INPUT_SIZES[task],
                                       log=lines.append)
    assert result.task == task
    assert result.arch == 'm0'
    assert result.cfg_options_string == EXPECTED_OPTIONS[task]
    assert any('max relative difference' in line for line in lines)  # printed either way

    saved = read_checkpoint(out)  # weights_only: nothing but tensors and plain data
    info = saved['meta']['repnext_mm']
    assert info['fused'] is True and info['arch'] == 'm0' and info['task'] == task
    assert info['source'] == os.path.abspath(checkpoint)
    assert saved['meta']['dataset_meta']['classes'][0] == 'circle'

    cfg = load_model_config(config)
    original = build_model(cfg)
    load_checkpoint(original, str(checkpoint), map_location='cpu', strict=True)
    deployed = build_model(cfg, parse_cfg_options(result.cfg_options_string))
    load_checkpoint(deployed, str(out), map_location='cpu', strict=True)
    assert not any(isinstance(m, _BatchNorm) for m in deployed.backbone.modules())

    # Not the input the tool verified with.
    inputs = example_inputs(SHAPES_INPUT_SIZES[task], seed=7)
    expected = tensor_forward(original, inputs)
    actual = tensor_forward(deployed, inputs, proposals=expected.proposals)
    assert compare_outputs(actual.outputs, expected.outputs).max_rel < 1e-4
    if task == 'classifier':  # one fused Linear replaces both BN1d + Linear heads
        assert isinstance(deployed.head.fc, torch.nn.Linear)
        assert not hasattr(deployed.head, 'head') and not hasattr(deployed.head, 'head_dist')


def _expect_refusal(tmp_path, match: str, **kwargs) -> None:
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(InputError, match=match):
        reparameterize_checkpoint(**kwargs)
    assert sorted(os.listdir(tmp_path)) == before  # no output, no temporary left behind


def test_refuses_an_already_fused_checkpoint(trained_checkpoints, tmp_path):
    fused = tmp_path / 'fused.pth'
    reparameterize_checkpoint(SHAPES_CONFIGS['classifier'], trained_checkpoints['classifier'],
                              fused, shape=SHAPES_INPUT_SIZES['classifier'], log=lambda _: None)
    _expect_refusal(tmp_path, 'already fused.*model.backbone.deploy=True model.head.deploy=True',
                    config=SHAPES_CONFIGS['classifier'], checkpoint=fused,
                    out=tmp_path / 'again.pth')
    # Same refusal from the keys alone (meta stripped, e.g. re-saved by another tool).
    stripped = tmp_path / 'stripped.pth'
    torch.save(dict(state_dict=read_checkpoint(fused)['state_dict']), stripped)
    _expect_refusal(tmp_path, r'already fused \(key .*reparam', config=SHAPES_CONFIGS['classifier'],
                    checkpoint=stripped, out=tmp_path / 'again.pth')


def test_refuses_a_checkpoint_of_another_config(trained_checkpoints, tmp_path):
    _expect_refusal(tmp_path, 'do not fit the model built from the config: .*missing .*unexpected',
                    config=SHAPES_CONFIGS['classifier'],
                    checkpoint=trained_checkpoints['segmentor'], out=tmp_path / 'out.pth')


def test_refuses_another_arch(trained_checkpoints, tmp_path):
    cfg_options = {'model.backbone.arch': 'm1', 'model.head.in_channels': 384}
    _expect_refusal(tmp_path, 'wrong shape', config=SHAPES_CONFIGS['classifier'],
                    checkpoint=trained_checkpoints['classifier'], out=tmp_path / 'out.pth',
                    cfg_options=cfg_options)


@pytest.mark.parametrize('damage', ['truncated', 'empty'])
def test_refuses_a_damaged_file(trained_checkpoints, tmp_path, damage):
    data = trained_checkpoints['classifier'].read_bytes()
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(data[:len(data) // 3] if damage == 'truncated' else b'')
    _expect_refusal(tmp_path, 'truncated' if damage == 'truncated' else 'empty',
                    config=SHAPES_CONFIGS['classifier'], checkpoint=bad, out=tmp_path / 'out.pth')


def test_refuses_to_overwrite_without_force(trained_checkpoints, tmp_path):
    out = tmp_path / 'out.pth'
    out.write_text('keep me')
    _expect_refusal(tmp_path, '--force', config=SHAPES_CONFIGS['classifier'],
                    checkpoint=trained_checkpoints['classifier'], out=out)
    assert out.read_text() == 'keep me'
    reparameterize_checkpoint(SHAPES_CONFIGS['classifier'], trained_checkpoints['classifier'],
                              out, force=True, shape=SHAPES_INPUT_SIZES['classifier'],
                              log=lambda _: None)
    assert 'state_dict' in read_checkpoint(out)


def test_refuses_to_write_when_outputs_differ(trained_checkpoints, tmp_path):
    """The verification gate: with an impossible tolerance the (correct) fusion is refused."""
    _expect_refusal(tmp_path, 'differs from the original beyond the tolerance 1e-12.*nothing was '
                    'written', config=SHAPES_CONFIGS['classifier'],
                    checkpoint=trained_checkpoints['classifier'], out=tmp_path / 'out.pth',
                    shape=SHAPES_INPUT_SIZES['classifier'], tolerance=1e-12)


def test_refuses_a_missing_config(trained_checkpoints, tmp_path):
    _expect_refusal(tmp_path, 'config .* does not exist', config=tmp_path / 'nope.py',
                    checkpoint=trained_checkpoints['classifier'], out=tmp_path / 'out.pth')


def test_refuses_a_distillation_config_and_names_the_student_config(tmp_path):
    distill = SHAPES_CONFIGS['classifier'].parent / 'repnext_m0_8xb256_in1k_distill.py'
    _expect_refusal(tmp_path, 'distillation config.*repnext_m0_8xb256_in1k.py', config=distill,
                    checkpoint=tmp_path / 'student.pth', out=tmp_path / 'out.pth')
