"""timm's pretrained files and addresses for RepNeXt (repnext_mm/hub/timm_weights.py): a file or
an address that does not load is one InputError naming it and the fix, never torch's raw error,
and a bad download is never cached."""
from __future__ import annotations

import pytest

from repnext_mm.hub.weights import cache_dir
from repnext_mm.utils.errors import InputError
from tests.helpers import is_installed
from .release_server import Answer
from .test_weights import server  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.usefixtures('one_cpu_thread'),
              pytest.mark.skipif(not is_installed('timm'), reason='timm is not installed '
                                 '(pip install timm -c requirements/constraints.txt)')]


def create(deploy: bool = False, **overlay):
    import timm

    return timm.create_model('repnext_m0', pretrained=True, num_classes=10, deploy=deploy,
                             pretrained_cfg_overlay=dict(num_classes=10, **overlay))


def test_the_fused_torchscript_file_loads_into_a_fused_model_only(releases):
    path = str(releases['fused'].path)
    with pytest.raises(InputError, match='TorchScript classifier.*loads only into a fused model: '
                                         'create it with deploy=True'):
        create(file=path)
    model = create(deploy=True, file=path)
    assert model.backbone.deploy


@pytest.mark.parametrize('data, expected', [
    (bytes(range(256)) * 8, 'is not a readable PyTorch checkpoint'),
    (None, 'does not exist'),
])
def test_a_file_that_is_no_release_is_one_error(data, expected, tmp_path):
    path = tmp_path / 'weights.pth'
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(InputError, match=expected) as error:
        create(file=str(path))
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('case, why', [('web page', 'the server sent a web page'),
                                       ('cut short', 'the transfer stopped after 100 of')])
def test_an_address_outside_the_release_is_downloaded_with_the_checks(
        case, why, server, releases):  # noqa: F811
    body = releases['imagenet'].path.read_bytes()
    server.answers['/mirror/weights.pth'] = (
        Answer(b'<!doctype html><html>login</html>', content_type='text/html')
        if case == 'web page' else Answer(body[:100], length=len(body)))
    url = server.url('mirror/weights.pth')
    with pytest.raises(InputError) as error:
        create(url=url)
    message = str(error.value)
    assert message.startswith(f'could not download {url}: ') and why in message
    assert not cache_dir().is_dir() or list(cache_dir().iterdir()) == []


def test_an_address_outside_the_release_loads_like_the_file(server, releases):  # noqa: F811
    import torch

    url = server.serve_file('mirror/weights.pth', releases['imagenet'].path)
    from_url = create(url=url)
    from_file = create(file=str(releases['imagenet'].path))
    assert all(torch.equal(value, from_file.state_dict()[key])
               for key, value in from_url.state_dict().items())
