"""timm's model interface of the RepNeXt classifier (``repnext_mm/hub/timm_classifier.py``):
features, intermediates, pruning, the classifier, checkpointing, parameter groups, fusion (ours
and timm's ``reparameterize_model``) and TorchScript, on RepNeXt-M0 at 64x64."""
import copy

import pytest
import torch

import timm

import repnext_mm  # noqa: F401  (registers the models with timm)
from repnext_mm.hub.timm_classifier import RepNeXtTimm
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.heads.repnext_head import RepNeXtClsHead
from repnext_mm.models.utils.reparameterize import count_batchnorms
from tests.helpers import max_rel_error, randomize_norms

pytestmark = pytest.mark.usefixtures('one_cpu_thread')

WIDTHS = (40, 80, 160, 320)


@pytest.fixture(scope='module')
def model() -> RepNeXtTimm:
    """RepNeXt-M0 from timm with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    return randomize_norms(timm.create_model('repnext_m0')).eval()


@pytest.fixture(scope='module')
def x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _backbone_outputs(model: RepNeXtTimm, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The stage outputs of a plain ``RepNeXt('m0')`` holding the model's backbone weights."""
    backbone = RepNeXt('m0').eval()
    backbone.load_state_dict(model.backbone.state_dict())
    with torch.no_grad():
        return backbone(x)


def test_features_only_gives_the_backbones_stage_outputs(model, x):
    features = timm.create_model('repnext_m0', features_only=True).eval()
    features.model.backbone.load_state_dict(model.backbone.state_dict())
    assert features.feature_info.channels() == list(WIDTHS)
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    assert features.feature_info.module_name() == [f'backbone.stages.{i}' for i in range(4)]
    with torch.no_grad():
        outputs = features(x)
    expected = _backbone_outputs(model, x)
    assert [o.shape[-1] for o in outputs] == [16, 8, 4, 2]
    for output, stage in zip(outputs, expected):
        assert max_rel_error(output, stage) < 1e-6

    early = timm.create_model('repnext_m0', features_only=True, out_indices=(0, 1)).eval()
    assert len(early.model.backbone.stages) == 2  # the stages after the last output are pruned
    assert early.model.head is None
    assert early.feature_info.channels() == [40, 80]
    with torch.no_grad():
        for eager, scripted in zip(early(x), torch.jit.script(early)(x)):
            assert max_rel_error(scripted, eager) < 1e-5


def test_forward_intermediates_and_the_head(model, x):
    with torch.no_grad():
        final, stages = model.forward_intermediates(x)
        features = model.forward_features(x)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        chosen = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        early, (second,) = model.forward_intermediates(x, indices=[1], stop_early=True)
        pooled = model.forward_head(features, pre_logits=True)
        logits = model(x)
    expected = _backbone_outputs(model, x)
    assert len(stages) == 4
    for stage, reference in zip(stages, expected):
        assert max_rel_error(stage, reference) < 1e-6
    assert torch.equal(final, features) and torch.equal(features, stages[-1])
    assert [t.shape[1] for t in last_two] == [160, 320]
    assert [t.shape[1] for t in chosen] == [40, 320]
    assert torch.equal(early, second) and early.shape[1] == 80
    assert pooled.shape == (2, model.head_hidden_size) == (2, model.num_features)
    assert torch.allclose(pooled, features.mean((2, 3)))
    assert torch.allclose(logits, model.head.logits(pooled))
    with pytest.raises(ValueError, match='out of range'):
        model.forward_intermediates(x, indices=[4])
    with pytest.raises(ValueError, match='NCHW'):
        model.forward_intermediates(x, output_fmt='NHWC')


def test_prune_intermediate_layers_then_a_new_classifier(model, x):
    pruned = copy.deepcopy(model)
    assert pruned.prune_intermediate_layers([-3], prune_head=False) == [1]
    assert len(pruned.backbone.stages) == 2 and pruned.head is None
    assert pruned.num_features == pruned.head_hidden_size == 80
    with torch.no_grad():
        assert pruned(x).shape == (2, 80, 8, 8)  # no pooling, no classifier
    pruned.reset_classifier(5, 'avg')
    assert isinstance(pruned.get_classifier(), RepNeXtClsHead)
    assert pruned.eval()(x).shape == (2, 5)


def test_reset_classifier_keeps_device_dtype_mode_and_pooling():
    model = timm.create_model('repnext_m0', num_classes=3).double().eval()
    model.reset_classifier(7)
    head = model.get_classifier()
    assert isinstance(head, RepNeXtClsHead) and head.num_classes == 7
    assert all(p.dtype == torch.float64 for p in head.parameters()) and not head.training
    assert model.global_pool == 'avg'
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), torch.nn.Identity) and model.num_classes == 0
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64, dtype=torch.float64)).shape == (1, 320)


def test_grad_checkpointing_is_the_backbones_with_cp(model, x):
    plain, checkpointed = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    checkpointed.set_grad_checkpointing()
    assert checkpointed.backbone.with_cp and not plain.backbone.with_cp
    for net in (plain, checkpointed):
        net(x).square().mean().backward()
    assert torch.equal(plain.backbone.stem[0].bn.running_mean,
                       checkpointed.backbone.stem[0].bn.running_mean)
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name
    checkpointed.set_grad_checkpointing(False)
    assert not checkpointed.backbone.with_cp


def test_group_matcher_orders_stem_layers_and_head(model):
    groups = timm.models.group_parameters(model, model.group_matcher(), reverse=True)
    assert groups['backbone.stem.0.conv.weight'] == 0
    first = groups['backbone.stages.0.blocks.0.token_mixer.small.conv3x3.weight']
    downsample = groups['backbone.stages.1.downsample.token_mixer.small.conv3x3.weight']
    block = groups['backbone.stages.1.blocks.0.token_mixer.small.conv3x3.weight']
    assert 0 < first < downsample < block < groups['head.head.linear.weight']
    assert len(set(groups.values())) == 1 + 2 + 1 + 2 + 1 + 9 + 1 + 1 + 1  # stem, layers, head
    coarse = timm.models.group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    assert len(set(coarse.values())) == 1 + 4 + 1


def test_timms_reparameterize_model_and_ours_fuse_everything(model, x):
    with torch.no_grad():
        expected = model(x)
    timm_fused = timm.utils.reparameterize_model(model)  # a fused copy
    ours = copy.deepcopy(model)
    ours.reparameterize()
    for fused in (timm_fused, ours):
        assert count_batchnorms(fused) == 0
        with torch.no_grad():
            assert max_rel_error(fused(x), expected) < 1e-5
    # ours is the package's deploy layout: a fused mmpretrain checkpoint fits it, and back
    deploy = RepNeXtTimm('m0', deploy=True)
    deploy.load_state_dict(ours.state_dict())
    assert count_batchnorms(model) > 0  # reparameterize_model left the original alone


def test_torchscript_of_the_training_and_the_fused_forms(model, x):
    with torch.no_grad():
        expected = model(x)
    ours = copy.deepcopy(model)
    ours.reparameterize()
    for form in (model, timm.utils.reparameterize_model(model), ours):
        scripted = torch.jit.script(form)
        with torch.no_grad():
            assert max_rel_error(scripted(x), expected) < 1e-5
