"""The authors' release files by URL (``repnext_mm/hub/weights.py``): init_cfg Pretrained,
load_from / the strict runner, ``tools/test.py CONFIG URL``, the cache, every failed download,
addresses outside the release, and timm's ``pretrained=True``.

A loopback server (:mod:`tests.hub.release_server`) stands in for GitHub: ``REPNEXT_RELEASE_URL``
points the release folder at it, and ``TORCH_HOME`` the cache at the test's own folder. The
files it serves are built in the published layouts (``tests/deploy/release_layout.py``); all
hold RepNeXt-M0, whatever arch their name says, since the loader recognizes files by content.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader, load_from_http

from repnext_mm.apis.checkpoint import read_checkpoint
from repnext_mm.deploy.convert import convert_official_checkpoint
from repnext_mm.hub import weights
from repnext_mm.hub.weights import (cache_dir, is_release_url,
                                    load_from_repnext_release, load_release_url,
                                    register_release_loader)
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.releases import RELEASE_URL, RELEASE_URL_ENV
from repnext_mm.utils.errors import InputError
from tests.deploy.author_layout import author_checkpoint
from tests.deploy.release_layout import AuthorFusedRepNext, segmentor_checkpoint
from tests.helpers import REPO, SHAPES_CONFIGS, is_installed, max_rel_error, run_tool
from .release_server import Answer, ReleaseServer, refused_address

pytestmark = pytest.mark.usefixtures('one_cpu_thread')

#: A released name per kind of file (``releases`` fixture kind -> name in the release).
NAMES = dict(imagenet='repnext_m0_distill_300e.pth',
             timm='repnext_m0_sz224_4xbs256_ep300_distill.pth.tar',
             detector='repnext_m3_coco.pth', segmentor='repnext_m3_ade20k.pth',
             fused='repnext_m0_distill_300e_fused.pt')
DETECTOR_CONFIG = REPO / 'configs/mmdet/mask_rcnn_repnext_m0_fpn_1x_coco.py'


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The release folder served from 127.0.0.1 (``server.url('release/')``), an empty cache
    (``TORCH_HOME``), and the loader registered for that folder for the test's duration."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)  # torch.hub.set_dir would beat TORCH_HOME
    before = set(CheckpointLoader._schemes)
    with ReleaseServer() as release_server:
        serve_release_from(release_server.url('release/'), monkeypatch)
        try:
            yield release_server
        finally:  # CheckpointLoader has no unregister; a test's folders must not outlive it
            for prefix in set(CheckpointLoader._schemes) - before:
                CheckpointLoader._schemes.pop(prefix)


def serve_release_from(folder: str, monkeypatch) -> None:
    """Points ``REPNEXT_RELEASE_URL`` at ``folder`` and registers the loader for it."""
    monkeypatch.setenv(RELEASE_URL_ENV, folder)
    register_release_loader()


def publish(server: ReleaseServer, name: str, file: Path) -> str:
    """Serves ``file`` as the release's ``name``; returns its address."""
    return server.serve_file('release/' + name, file)


def cached_files() -> list[str]:
    """Everything in the cache folder, hidden temporaries included."""
    folder = cache_dir()
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def converted(src: Path, dst: Path, task: str = 'model') -> dict[str, torch.Tensor]:
    """``src`` converted by ``tools/deploy/convert_official.py``'s function: the reference."""
    convert_official_checkpoint(src, dst, task=task)
    return torch.load(dst, weights_only=True)['state_dict']


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------
def test_the_release_folder_is_registered_on_import_and_others_keep_mmengines_loader():
    name = NAMES['imagenet']
    assert CheckpointLoader._get_checkpoint_loader(RELEASE_URL + name) is \
        load_from_repnext_release
    for other in ('https://github.com/suous/RepNeXt/archive/v1.0.zip',
                  'https://download.openmmlab.com/mmclassification/v0/x.pth'):
        assert CheckpointLoader._get_checkpoint_loader(other) is load_from_http
        assert not is_release_url(other)


def test_the_environment_variable_adds_a_folder_and_keeps_the_authors(server):
    assert weights.release_prefixes() == (RELEASE_URL, server.url('release/'))
    assert is_release_url(server.url('release/') + NAMES['fused'])
    assert CheckpointLoader._get_checkpoint_loader(server.url('release/x')) is \
        load_from_repnext_release


# ---------------------------------------------------------------------------------------------
# init_cfg Pretrained
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('kind', ['imagenet', 'timm', 'detector', 'segmentor'])
def test_init_cfg_pretrained_url_gives_the_converted_backbone(server, releases, kind, tmp_path):
    url = publish(server, NAMES[kind], releases[kind].path)
    backbone = RepNeXt('m0', init_cfg=dict(type='Pretrained', checkpoint=url,
                                           prefix='backbone.'))
    backbone.init_weights()
    expected = converted(releases[kind].path, tmp_path / 'backbone.pth', task='backbone')
    assert_same_weights({f'backbone.{k}': v for k, v in backbone.state_dict().items()}, expected)
    assert server.requests == ['/release/' + NAMES[kind]]
    assert cached_files() == [NAMES[kind]]


def test_a_cached_file_is_used_without_a_request(server, releases):
    url = publish(server, NAMES['imagenet'], releases['imagenet'].path)
    first = load_release_url(url)
    second = read_checkpoint(url)  # the package's own reader takes addresses too
    assert server.requests == ['/release/' + NAMES['imagenet']]
    assert_same_weights(second['state_dict'], first['state_dict'])
    assert (cache_dir() / NAMES['imagenet']).read_bytes() == releases['imagenet'].path.read_bytes()


def test_the_loaded_checkpoint_records_what_it_was_converted_from(server, releases):
    url = publish(server, NAMES['segmentor'], releases['segmentor'].path)
    checkpoint = load_release_url(url)
    info = checkpoint['meta']['repnext_mm']
    assert (info['converted_from'], info['source_kind'], info['arch'], info['fused']) == (
        url, 'segmentor', 'm0', False)
    assert checkpoint['meta']['dataset_meta']['classes'][:2] == ('class_0', 'class_1')
    assert {key.split('.')[0] for key in checkpoint['state_dict']} == {
        'backbone', 'neck', 'decode_head'}


def test_mmpretrain_get_model_takes_a_release_url(server, releases, tmp_path):
    from mmpretrain import get_model

    url = publish(server, NAMES['imagenet'], releases['imagenet'].path)
    model = get_model(str(REPO / 'configs/mmpretrain/repnext_m0_8xb256_in1k.py'), pretrained=url,
                      head=dict(num_classes=10))
    assert_same_weights(model.state_dict(), converted(releases['imagenet'].path,
                                                      tmp_path / 'cls.pth'))


# ---------------------------------------------------------------------------------------------
# load_from: the strict runner
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # builds a Mask R-CNN runner (3-6 s on 2 shared cores)
def test_load_from_url_loads_the_whole_detector_strictly(server, releases, tmp_path):
    from mmengine.config import Config

    from repnext_mm.engine.runner import build_runner

    url = publish(server, NAMES['detector'], releases['detector'].path)
    cfg = Config.fromfile(str(DETECTOR_CONFIG))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = url
    cfg.model.backbone.init_cfg = None
    runner = build_runner(cfg)
    runner.load_checkpoint(url)
    expected = converted(releases['detector'].path, tmp_path / 'detector.pth')
    assert_same_weights(runner.model.state_dict(), expected)


# ---------------------------------------------------------------------------------------------
# tools/test.py CONFIG URL
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def shapes_classifier_release(tmp_path_factory) -> dict[str, Path]:
    """The authors' classifier (4 classes, as the shapes config has) and its fused TorchScript
    release."""
    folder = tmp_path_factory.mktemp('shapes_release')
    checkpoint = author_checkpoint('m0', num_classes=4, seed=11)
    torch.save(checkpoint, folder / 'distill.pth')
    fused = AuthorFusedRepNext.from_training(checkpoint['model'], 'm0')
    torch.jit.save(torch.jit.script(fused), folder / 'fused.pt')
    return dict(imagenet=folder / 'distill.pth', fused=folder / 'fused.pt')


@pytest.mark.slow  # two evaluations of the shapes classifier (about 10 s)
def test_tools_test_scores_a_release_url_and_a_fused_one(
        server, shapes_classifier_release, shapes_data, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(REPO)
    config = str(SHAPES_CONFIGS['classifier'])
    scores = {}
    for kind in ('imagenet', 'fused'):
        url = publish(server, NAMES[kind], shapes_classifier_release[kind])
        status, out, err = run_tool('tools/test.py', [config, url, '--work-dir',
                                                      tmp_path / kind], capsys)
        assert status == 0, err
        metrics = json.loads(out.rsplit('test metrics: ', 1)[1])
        scores[kind] = metrics['accuracy/top1']
    assert 'building the fused model with model.backbone.deploy=True' in err
    # The fused release holds the same model: the same predictions.
    assert scores['fused'] == scores['imagenet']
    assert cached_files() == sorted([NAMES['imagenet'], NAMES['fused']])


@pytest.mark.slow  # evaluates the shapes Semantic FPN (about 10 s)
@pytest.mark.skipif(not is_installed('mmcv._ext'), reason='mmseg models need mmcv with its ops')
def test_tools_test_scores_a_segmentor_release_url(server, shapes_data, monkeypatch, tmp_path,
                                                   capsys):
    monkeypatch.chdir(REPO)
    torch.save(segmentor_checkpoint('m0', num_classes=4, seed=12), tmp_path / 'ade20k.pth')
    url = publish(server, NAMES['segmentor'], tmp_path / 'ade20k.pth')
    status, out, err = run_tool('tools/test.py', [SHAPES_CONFIGS['segmentor'], url,
                                                  '--work-dir', tmp_path / 'work'], capsys)
    assert status == 0, err
    metrics = json.loads(out.rsplit('test metrics: ', 1)[1])
    assert 0.0 <= metrics['mIoU'] <= 100.0


# ---------------------------------------------------------------------------------------------
# Failed downloads: one line naming the address and the manual route; nothing in the cache
# ---------------------------------------------------------------------------------------------
def _failing(server: ReleaseServer, releases, case: str, monkeypatch) -> tuple[str, str]:
    """The address of a download that fails as ``case`` does, and what the error says."""
    name = NAMES['imagenet']
    data = releases['imagenet'].path.read_bytes()
    if case == 'refused':  # a release folder where nothing listens
        folder = refused_address()
        serve_release_from(folder, monkeypatch)
        return folder + name, 'Connection refused'
    if case == 'cut short':
        server.answers['/release/' + name] = Answer(data[:len(data) // 3], length=len(data))
        return server.url('release/' + name), f'stopped after {len(data) // 3} of {len(data)} bytes'
    if case == 'html page':
        server.answers['/release/' + name] = Answer(
            b'<!DOCTYPE html><html><body>Sign in to GitHub</body></html>',
            content_type='text/html; charset=utf-8')
        return server.url('release/' + name), 'a web page'
    if case == 'not a release':
        server.answers['/release/' + name] = Answer(b'\x80\x02}q\x00.' * 3)  # some pickle
        return server.url('release/' + name), "not one of the release's checkpoints"
    return server.url('release/' + name), 'HTTP 404'  # nothing served there


FAILURES = ['404', 'refused', 'cut short', 'html page', 'not a release']


@pytest.mark.parametrize('case', FAILURES)
def test_a_failed_download_is_one_error_and_leaves_no_file(server, releases, monkeypatch, case):
    url, why = _failing(server, releases, case, monkeypatch)
    with pytest.raises(InputError) as error:
        load_release_url(url)
    message = str(error.value)
    assert '\n' not in message
    assert message.startswith(f'could not download {url}: ')
    assert why in message
    assert 'python tools/deploy/convert_official.py FILE OUT' in message
    assert cached_files() == []


@pytest.mark.parametrize('case', FAILURES)
def test_tools_test_says_a_failed_download_in_one_line(server, releases, shapes_data, monkeypatch,
                                                       tmp_path, capsys, case):
    monkeypatch.chdir(REPO)
    url, why = _failing(server, releases, case, monkeypatch)
    status, out, err = run_tool('tools/test.py', [SHAPES_CONFIGS['classifier'], url,
                                                  '--work-dir', tmp_path / 'work'], capsys)
    assert status == 2
    assert 'Traceback' not in err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and url in errors[0] and why in errors[0], err
    assert 'convert_official.py' in errors[0]
    assert cached_files() == []
    assert not (tmp_path / 'work').exists()


def test_a_name_outside_the_release_is_refused_before_any_request(server):
    with pytest.raises(InputError, match='is a Core ML model, not a checkpoint'):
        load_release_url(server.url('release/repnext_m0_distill_300e_224.mlmodel'))
    with pytest.raises(InputError, match="not a checkpoint of the authors' release"):
        load_release_url(server.url('release/resnet50.pth'))
    assert server.requests == []


def test_a_cache_that_cannot_be_written_says_so_before_downloading(server, releases):
    url = publish(server, NAMES['imagenet'], releases['imagenet'].path)
    cache_dir().parent.parent.mkdir(parents=True)
    cache_dir().parent.write_text('a file where the hub folder should be')
    with pytest.raises(InputError, match=r'could not save .* point TORCH_HOME at a writable '
                                         r'folder, or download the file by hand'):
        load_release_url(url)
    assert server.requests == []


def test_a_damaged_cached_file_names_itself_and_the_fix(server, releases):
    url = publish(server, NAMES['imagenet'], releases['imagenet'].path)
    cache_dir().mkdir(parents=True)
    (cache_dir() / NAMES['imagenet']).write_bytes(b'not a checkpoint')
    with pytest.raises(InputError, match='Delete it to download the file again'):
        load_release_url(url)
    assert server.requests == []


# ---------------------------------------------------------------------------------------------
# Other addresses: MMEngine's own loader, unconverted
# ---------------------------------------------------------------------------------------------
def test_an_address_outside_the_release_keeps_mmengines_behaviour(server, tmp_path):
    ours = {'backbone.stem.0.conv.weight': torch.ones(2, 3, 3, 3)}
    torch.save(dict(state_dict=ours), tmp_path / 'model.pth')
    url = server.serve_file('other/model.pth', tmp_path / 'model.pth')
    assert CheckpointLoader._get_checkpoint_loader(url) is load_from_http
    checkpoint = read_checkpoint(url)
    assert_same_weights(checkpoint['state_dict'], ours)
    assert 'meta' not in checkpoint  # as saved, not converted
    with pytest.raises(InputError, match='could not be loaded .*HTTP Error 404'):
        read_checkpoint(server.url('other/missing.pth'))


# ---------------------------------------------------------------------------------------------
# timm's pretrained=True
# ---------------------------------------------------------------------------------------------
requires_timm = pytest.mark.skipif(not is_installed('timm'), reason='timm is not installed '
                                   '(pip install timm -c requirements/constraints.txt)')


@requires_timm
def test_timm_pretrained_downloads_a_release_url_into_the_same_cache(server, releases, tmp_path):
    import timm

    url = publish(server, NAMES['imagenet'], releases['imagenet'].path)
    # num_classes in the overlay too: timm keeps a classifier whose class count is the tag's
    model = timm.create_model('repnext_m0.dist_300e_in1k', pretrained=True, num_classes=10,
                              pretrained_cfg_overlay=dict(url=url, num_classes=10))
    expected = converted(releases['imagenet'].path, tmp_path / 'cls.pth')
    assert_same_weights(model.state_dict(), expected)
    # timm cached it where this loader looks: init_cfg / load_from make no request.
    load_release_url(url)
    assert server.requests == ['/release/' + NAMES['imagenet']]


@requires_timm
@pytest.mark.parametrize('case', ['404', 'cut short', 'html page'])
def test_timm_pretrained_says_a_failed_download_in_one_line(server, releases, monkeypatch, case):
    """timm's own download (torch.hub) would cache a cut-short or HTML answer as the file and
    report a 404 as a traceback; the registration fetches through the checked download first."""
    import timm

    url, why = _failing(server, releases, case, monkeypatch)
    with pytest.raises(InputError) as error:
        timm.create_model('repnext_m0', pretrained=True, num_classes=10,
                          pretrained_cfg_overlay=dict(url=url))
    message = str(error.value)
    assert '\n' not in message and message.startswith(f'could not download {url}: ')
    assert why in message
    assert cached_files() == []


def test_a_fused_release_url_loads_as_a_fused_checkpoint(server, releases, tmp_path):
    url = publish(server, NAMES['fused'], releases['fused'].path)
    checkpoint = read_checkpoint(url)
    info = checkpoint['meta']['repnext_mm']
    assert info['fused'] and info['cfg_options'] == {'model.backbone.deploy': True,
                                                     'model.head.deploy': True}
    expected = converted(releases['fused'].path, tmp_path / 'fused.pth')
    for key, value in expected.items():  # folding repeats exactly
        assert max_rel_error(checkpoint['state_dict'][key], value) < 1e-6, key
