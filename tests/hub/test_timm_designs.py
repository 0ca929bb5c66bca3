"""The backbone's design presets through timm (``repnext_mm/hub/timm_models.py``): ``design=``
on every arch and the single-branch models ``repnext_m0e`` .. ``repnext_m2e``, which have no
weights."""
import pytest
import torch

timm = pytest.importorskip('timm')

import repnext_mm  # noqa: E402,F401  (registers the models with timm)
from repnext_mm.models.backbones.repnext import RepNeXt  # noqa: E402
from repnext_mm.models.utils.complexity import count_params  # noqa: E402

pytestmark = pytest.mark.usefixtures('one_cpu_thread')


def test_design_passes_through_to_the_backbone():
    with torch.device('meta'):
        model = timm.create_model('repnext_m1', design='no_srp')
        backbone = RepNeXt('m1', design='no_srp')
    assert model.backbone.design_name == 'no_srp'
    assert count_params(model) == 5_230_424  # M1 without SRP, both 1000-class heads
    assert model.backbone.state_dict().keys() == backbone.state_dict().keys()
    with pytest.raises(ValueError, match=r"^design='nope': expected one of repnext, no_srp"):
        timm.create_model('repnext_m1', design='nope', device='meta')
    with pytest.raises(ValueError, match="the released weights are of design 'repnext'"):
        timm.create_model('repnext_m1', pretrained=True, design='no_srp')


@pytest.mark.parametrize('arch', ['m0', 'm1', 'm2'])
def test_single_branch_models_are_registered_without_weights(arch):
    name = f'repnext_{arch}e'
    assert name in timm.list_models('repnext_*')
    assert name not in timm.list_pretrained('repnext_*')
    with torch.device('meta'):
        model = timm.create_model(name)
    assert model.backbone.design_name == 'single_branch'
    with torch.device('meta'):
        expected = timm.create_model(f'repnext_{arch}', design='single_branch')
    assert model.state_dict().keys() == expected.state_dict().keys()
    with pytest.raises(ValueError, match=f'{name}: no pretrained weights exist'):
        timm.create_model(name, pretrained=True)
    with pytest.raises(ValueError, match=f"{name} is design 'single_branch'"):
        timm.create_model(name, design='no_srp')


def test_a_single_branch_model_reparameterizes_exactly():
    model = timm.create_model('repnext_m0e', num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
        model.reparameterize()
        assert torch.allclose(model(x), expected, rtol=1e-4, atol=1e-5)
