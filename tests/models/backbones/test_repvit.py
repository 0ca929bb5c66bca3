"""repnext_mm/models/backbones/repvit.py: timm's RepViT-M0.9 with RepNeXt's downsample layer."""
import pytest
import torch

from repnext_mm.models.backbones.repnext import Downsample
from repnext_mm.models.backbones.repvit import RepViTBackbone
from repnext_mm.utils.errors import InputError

pytestmark = pytest.mark.usefixtures('one_cpu_thread')


@pytest.mark.parametrize('repnext_downsample', [False, True])
def test_fused_form_computes_the_training_forms_function(repnext_downsample):
    torch.manual_seed(0)
    backbone = RepViTBackbone(repnext_downsample=repnext_downsample, out_indices=(1, 3))
    swapped = [m for m in backbone.modules() if isinstance(m, Downsample)]
    assert len(swapped) == (3 if repnext_downsample else 0)
    backbone.train()
    backbone(torch.randn(4, 3, 64, 64))  # BN statistics away from their initial values
    backbone.eval()
    inputs = torch.randn(1, 3, 96, 96)
    expected = backbone(inputs)
    assert [tuple(o.shape) for o in expected] == [(1, 96, 12, 12), (1, 384, 3, 3)]
    backbone.switch_to_deploy()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    for out, ref in zip(backbone(inputs), expected):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_unknown_model_names_the_choices():
    with pytest.raises(InputError,
                       match=r"model_name='repvit_m1_1': expected one of \('repvit_m0_9',\)"):
        RepViTBackbone(model_name='repvit_m1_1')
