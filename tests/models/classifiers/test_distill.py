"""Tests of repnext_mm.DistillImageClassifier (DeiT hard distillation)."""
from __future__ import annotations

import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import repnext_mm  # noqa: F401  (registers the modules)
from repnext_mm.models.classifiers import DistillImageClassifier
from repnext_mm.models.heads.repnext_head import DISTILL_LABEL

NUM_CLASSES = 5
TINY_ARCH = dict(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1))

# One thread: on shared CPU cores OpenMP's spinning worker threads slow forwards ~100x.
pytestmark = pytest.mark.usefixtures('one_cpu_thread')


def teacher_cfg() -> dict:
    return dict(
        type='ImageClassifier',
        backbone=dict(type='repnext_mm.RepNeXt', arch=TINY_ARCH, out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=64))


def student_cfg(**kwargs) -> dict:
    return dict(
        type='repnext_mm.DistillImageClassifier',
        backbone=dict(type='repnext_mm.RepNeXt', arch=TINY_ARCH, out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='repnext_mm.RepNeXtClsHead', num_classes=NUM_CLASSES, in_channels=64),
        teacher=teacher_cfg(),
        **kwargs)


def build(**kwargs) -> DistillImageClassifier:
    init_default_scope('mmpretrain')
    return MODELS.build(student_cfg(**kwargs))


def batch(n: int = 4) -> tuple[torch.Tensor, list[DataSample]]:
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(n, 3, 32, 32, generator=gen)
    samples = [DataSample().set_gt_label(i % NUM_CLASSES) for i in range(n)]
    return inputs, samples


def save_teacher(model: DistillImageClassifier, path, wrap: str | None) -> dict:
    """Saves random teacher weights (optionally under ``wrap``) and returns them."""
    weights = {k: torch.randn_like(v) if v.is_floating_point() else v
               for k, v in model.teacher.state_dict().items()}
    torch.save({wrap: weights} if wrap else weights, path)
    return weights


def test_teacher_is_frozen_and_stays_in_eval_mode():
    model = build(teacher_checkpoint=None)
    model.train()
    assert model.backbone.training and not model.teacher.training
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert all(p.requires_grad for p in model.backbone.parameters())
    bn = next(m for m in model.teacher.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    model.loss(*batch())
    assert torch.equal(bn.running_mean, stats)  # a training step leaves the teacher unchanged


def test_loss_sets_teacher_argmax_labels_and_adds_the_distillation_term():
    model = build(teacher_checkpoint=None)
    model.train()
    inputs, samples = batch()
    losses = model.loss(inputs, samples)
    with torch.no_grad():
        expected = model.teacher(inputs, mode='tensor').argmax(dim=1)
    labels = torch.cat([s.get(DISTILL_LABEL) for s in samples])
    assert labels.dtype == torch.long and labels.shape == (4, )
    assert torch.equal(labels, expected)
    assert set(losses) == {'loss', 'loss_distill'}
    total = losses['loss'] + losses['loss_distill']
    total.backward()
    assert model.head.head_dist.linear.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_predict_uses_the_student_only():
    model = build(teacher_checkpoint=None).eval()
    inputs, samples = batch()
    with torch.no_grad():
        predictions = model.predict(inputs, samples)
        student = model.head(model.extract_feat(inputs))
    assert torch.allclose(torch.stack([p.pred_score for p in predictions]),
                          student.softmax(dim=1))


@pytest.mark.parametrize('wrap', [None, 'model', 'state_dict'])
def test_init_weights_loads_the_teacher_checkpoint(tmp_path, wrap):
    model = build(teacher_checkpoint=str(tmp_path / 'teacher.pth'))
    weights = save_teacher(model, tmp_path / 'teacher.pth', wrap)
    model.init_weights()
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_checkpoints_hold_the_student_only_and_reload(tmp_path):
    model = build(teacher_checkpoint=str(tmp_path / 'teacher.pth'))
    save_teacher(model, tmp_path / 'teacher.pth', 'model')
    model.init_weights()
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    state = model.state_dict()
    assert state and not any(k.startswith('teacher.') for k in state)
    assert any(k.startswith('backbone.') for k in state)

    # The student's weights load into the plain classifier config ...
    init_default_scope('mmpretrain')
    plain_cfg = student_cfg()
    plain_cfg['type'] = 'ImageClassifier'
    del plain_cfg['teacher']
    plain = MODELS.build(plain_cfg)
    plain.load_state_dict(state, strict=True)
    # ... and back into a distilling model (resume), whose teacher keeps its weights.
    other = build(teacher_checkpoint=None)
    other.teacher.load_state_dict(teacher_before)
    other.load_state_dict(state, strict=True)
    for key, value in other.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key])


def test_missing_or_remote_or_mismatched_teacher_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match='teacher_checkpoint is None'):
        build(teacher_checkpoint=None).init_weights()
    with pytest.raises(FileNotFoundError, match='does not exist'):
        build(teacher_checkpoint=str(tmp_path / 'nope.pth')).init_weights()
    with pytest.raises(ValueError, match='nothing is downloaded'):
        build(teacher_checkpoint='https://example.com/teacher.pth')
    torch.save({'model': {'fc.weight': torch.zeros(3, 3)}}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='does not fit the teacher'):
        build(teacher_checkpoint=str(tmp_path / 'other.pth')).init_weights()


def test_teacher_with_another_label_set_is_rejected():
    cfg = student_cfg(teacher_checkpoint=None)
    cfg['teacher']['head']['num_classes'] = NUM_CLASSES + 1
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg)
    with pytest.raises(ValueError, match='same label set'):
        model.loss(*batch())
