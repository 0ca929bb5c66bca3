"""RepNeXt classification head: the authors' structure, fusion into one Linear, distillation loss."""
import copy

import pytest
import torch
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmpretrain.structures import DataSample

from repnext_mm.models import RepNeXt, RepNeXtClsHead
from tests.helpers import max_rel_error, randomize_norms

# reference-facts.md: the authors' full classifiers, training form, 1000 classes.
CLASSIFIER_PARAMS = dict(m0=2_716_480, m1=5_323_316, m2=7_049_082, m3=8_466_560, m4=14_080_480,
                         m5=22_708_860)


def build_classifier(arch: str, num_classes: int = 1000, **head_kwargs):
    width = RepNeXt.arch_settings[arch]['widths'][-1]
    return MMPRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='repnext_mm.RepNeXt', arch=arch, out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='repnext_mm.RepNeXtClsHead', num_classes=num_classes, in_channels=width,
                  **head_kwargs)))


@pytest.mark.parametrize('arch', CLASSIFIER_PARAMS)
def test_classifier_params_match_authors_training_form(arch):
    assert sum(p.numel() for p in build_classifier(arch).parameters()) == CLASSIFIER_PARAMS[arch]


def test_head_fuses_into_one_linear_with_equal_logits():
    model = randomize_norms(build_classifier('m0', num_classes=10), seed=2).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(x, mode='tensor')
        model.backbone.switch_to_deploy()
        model.head.switch_to_deploy()
        model.head.switch_to_deploy()  # idempotent
        actual = model(x, mode='tensor')
    assert max_rel_error(actual, expected) < 1e-4
    assert [name for name, _ in model.head.named_children()] == ['loss_module', 'fc']

    deployed = build_classifier('m0', num_classes=10, deploy=True)
    deployed.backbone.switch_to_deploy()
    deployed.load_state_dict(model.state_dict(), strict=True)


def test_inference_logits_are_the_mean_of_both_heads():
    head = randomize_norms(RepNeXtClsHead(num_classes=5, in_channels=8)).eval()
    feats = (torch.randn(4, 8), )
    with torch.no_grad():
        cls_score, dist_score = head.forward_both(feats)
        torch.testing.assert_close(head(feats), (cls_score + dist_score) / 2)


def _samples(labels, teacher=None):
    samples = []
    for i, label in enumerate(labels):
        sample = DataSample().set_gt_label(label)
        if teacher is not None:
            sample.set_field(torch.tensor([teacher[i]]), 'distill_label')
        samples.append(sample)
    return samples


def test_loss_without_teacher_is_cross_entropy_of_mean_logits():
    head = RepNeXtClsHead(num_classes=4, in_channels=8)
    feats = (torch.randn(3, 8), )
    losses = head.loss(feats, _samples([0, 1, 2]))
    expected = torch.nn.functional.cross_entropy(head(feats), torch.tensor([0, 1, 2]))
    torch.testing.assert_close(losses['loss'], expected)
    assert 'loss_distill' not in losses


def test_hard_distillation_loss_uses_each_head_for_its_target():
    head = RepNeXtClsHead(num_classes=4, in_channels=8)
    feats = (torch.randn(3, 8), )
    losses = head.loss(feats, _samples([0, 1, 2], teacher=[3, 3, 1]))
    cls_score, dist_score = head.forward_both(feats)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(losses['loss'], 0.5 * ce(cls_score, torch.tensor([0, 1, 2])))
    torch.testing.assert_close(losses['loss_distill'], 0.5 * ce(dist_score, torch.tensor([3, 3, 1])))


@pytest.mark.parametrize('kwargs, message', [(dict(num_classes=0, in_channels=8), 'num_classes'),
                                             (dict(num_classes=3, in_channels=8, distill_weight=2.0),
                                              'distill_weight')])
def test_bad_head_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RepNeXtClsHead(**kwargs)


def test_deployed_head_refuses_training():
    head = copy.deepcopy(RepNeXtClsHead(num_classes=3, in_channels=8)).eval()
    head.switch_to_deploy()
    with pytest.raises(RuntimeError, match='fused'):
        head.loss((torch.randn(2, 8), ), _samples([0, 1], teacher=[1, 2]))


def test_fused_linear_equals_the_head_and_leaves_it_unchanged():
    head = randomize_norms(RepNeXtClsHead(num_classes=5, in_channels=8), seed=3).eval()
    feats = (torch.randn(4, 8), )
    with torch.no_grad():
        linear = head.fused_linear()
        torch.testing.assert_close(linear(feats[-1]), head(feats))
    assert isinstance(linear, torch.nn.Linear) and not head.deploy
    assert [name for name, _ in head.named_children()] == ['loss_module', 'head', 'head_dist']


def test_timm_reparameterize_model_keeps_the_head_a_head():
    # timm replaces each child that has fuse() by what it returns; the head must survive as a
    # head (it pools, predicts and computes losses), switched to deploy in place.
    from timm.utils.model import reparameterize_model

    model = randomize_norms(build_classifier('m0', num_classes=10), seed=4).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x, mode='tensor')
        fused = reparameterize_model(model)
        actual = fused(x, mode='tensor')
    assert isinstance(fused.head, RepNeXtClsHead) and fused.head.deploy
    assert max_rel_error(actual, expected) < 1e-4
