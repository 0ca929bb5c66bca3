"""mmpretrain's ``get_model`` (and its Inferencers) by a zoo name load the weights strictly.

mmpretrain itself loads with ``strict=False``: a detector's or a ResNet's checkpoint would give a
model with random weights and no error. The zoo's names load through
:func:`repnext_mm.zoo.model_index.load_zoo_weights` instead.
"""
from __future__ import annotations

import pytest
import torch

from repnext_mm.utils.errors import InputError

mmpretrain = pytest.importorskip('mmpretrain', reason='the zoo registers with mmpretrain')
NAME = 'repnext_m0_8xb256_in1k'

pytestmark = pytest.mark.usefixtures('one_cpu_thread')


def test_every_route_by_name_is_the_strict_one():
    from mmpretrain.apis import base, model

    assert mmpretrain.get_model is model.get_model is base.get_model
    assert mmpretrain.get_model._repnext_strict


@pytest.mark.parametrize('case, expected', [
    ('detector', 'unexpected (e.g. neck.'),
    ('resnet18', 'unexpected (e.g. conv1.weight'),
    ('random bytes', 'is not a readable PyTorch checkpoint'),
])
def test_weights_that_do_not_load_are_an_error(case, expected, trained_checkpoints, tmp_path):
    import torchvision

    path = tmp_path / 'weights.pth'
    if case == 'detector':
        path = trained_checkpoints['detector']
    elif case == 'resnet18':
        torch.save(torchvision.models.resnet18().state_dict(), path)
    else:
        path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(InputError) as error:
        mmpretrain.get_model(NAME, pretrained=str(path))
    assert expected in str(error.value) and '\n' not in str(error.value)
    with pytest.raises(InputError, match='do not fit|not a readable'):
        mmpretrain.ImageClassificationInferencer(NAME, pretrained=str(path), device='cpu')


def test_a_local_copy_of_the_authors_file_loads_converted(releases, tmp_path):
    from repnext_mm.deploy.convert.official import convert_official_checkpoint

    release = releases['imagenet']  # 10 classes
    with pytest.raises(InputError, match=r'checkpoint \(10, 320\) vs model \(1000, 320\)'):
        mmpretrain.get_model(NAME, pretrained=str(release.path))
    model = mmpretrain.get_model(NAME, pretrained=str(release.path), head=dict(num_classes=10))
    convert_official_checkpoint(release.path, tmp_path / 'converted.pth')
    expected = torch.load(tmp_path / 'converted.pth', weights_only=True)['state_dict']
    assert set(model.state_dict()) == set(expected)
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())


def test_the_fused_torchscript_release_needs_the_fused_model(releases):
    path = str(releases['fused'].path)
    with pytest.raises(InputError, match=r"fused \(deploy\) weights: build the fused model with "
                                         r"get_model\('repnext_m0_8xb256_in1k'.*deploy=True"):
        mmpretrain.get_model(NAME, pretrained=path, head=dict(num_classes=10))
    model = mmpretrain.get_model(NAME, pretrained=path, backbone=dict(deploy=True),
                                 head=dict(num_classes=10, deploy=True))
    assert model.backbone.deploy


def test_other_models_keep_mmpretrains_loading(tmp_path):
    """Only the zoo's names are changed: another model of the hub is built as mmpretrain does."""
    model = mmpretrain.get_model('resnet18_8xb32_in1k', pretrained=False)
    assert type(model).__name__ == 'ImageClassifier'
