"""switch_to_deploy_all and the deploy config options."""
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from repnext_mm.utils.errors import InputError
from repnext_mm.apis.model import deploy_cfg_options, format_cfg_options
from repnext_mm.models.utils.reparameterize import (count_batchnorms, reparameterizable_modules,
                                                    switch_to_deploy_all)
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.heads.repnext_head import RepNeXtClsHead
from tests.helpers import max_rel_error, randomize_norms

TINY = dict(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1))


class TinyClassifier(nn.Module):
    """The module tree of an mmpretrain ImageClassifier (backbone, neck, head)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = RepNeXt(TINY, out_indices=(3,))
        self.neck = nn.AdaptiveAvgPool2d(1)
        self.head = RepNeXtClsHead(num_classes=5, in_channels=64)

    def forward(self, x):
        return self.head((self.neck(self.backbone(x)[-1]).flatten(1),))


def test_only_outermost_modules_are_switched():
    model = TinyClassifier()
    found = reparameterizable_modules(model)
    assert list(found) == ['backbone', 'head']  # not the blocks inside the backbone


def test_switch_to_deploy_all_fuses_everything_and_keeps_outputs():
    model = randomize_norms(TinyClassifier()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    assert switch_to_deploy_all(model) == ['backbone', 'head']
    assert model.backbone.deploy and model.head.deploy
    assert count_batchnorms(model) == 0
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    with torch.no_grad():
        assert max_rel_error(model(x), expected) < 1e-5
    assert switch_to_deploy_all(model) == ['backbone', 'head']  # idempotent


def test_deploy_cfg_options_follow_the_config_paths():
    cfg_model = dict(type='ImageClassifier', backbone=dict(type='repnext_mm.RepNeXt'),
                     head=dict(type='repnext_mm.RepNeXtClsHead'))
    options = deploy_cfg_options(cfg_model, ['backbone', 'head'])
    assert options == {'model.backbone.deploy': True, 'model.head.deploy': True}
    assert format_cfg_options(options) == 'model.backbone.deploy=True model.head.deploy=True'


def test_deploy_cfg_options_need_a_config_dict_per_module():
    with pytest.raises(InputError, match="'model.backbone.stages' has no config dict"):
        deploy_cfg_options(dict(backbone=dict(type='RepNeXt')), ['backbone.stages'])
