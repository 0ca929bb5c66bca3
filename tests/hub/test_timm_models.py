"""RepNeXt as timm models (``repnext_mm/hub/timm_models.py``): the registered archs and tags, and
the authors' ImageNet releases loaded through timm, checked against our mmpretrain classifier on
the same file converted by the release converter."""
import pytest
import torch

import timm

import repnext_mm  # noqa: F401  (registers the models with timm)
from repnext_mm import releases
from repnext_mm.apis.checkpoint import load_state_dict_checked, read_checkpoint
from repnext_mm.apis.model import build_model, load_model_config
from repnext_mm.deploy.convert import convert_official_checkpoint
from repnext_mm.deploy.convert.classifier import classifier_shapes
from repnext_mm.hub.timm_models import SINGLE_BRANCH_ARCHS, RepNeXtTimm
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.heads.repnext_head import RepNeXtClsHead
from repnext_mm.utils.errors import InputError
from tests.helpers import REPO, max_rel_error
from ..deploy.author_layout import author_checkpoint
from ..deploy.release_layout import timm_checkpoint

pytestmark = pytest.mark.usefixtures('one_cpu_thread')

ARCHS = tuple(RepNeXt.arch_settings)
#: Training-form parameters with the 1000-class head, counted on the authors' model.
TRAINING_PARAMS = dict(m0=2_716_480, m1=5_323_316, m2=7_049_082, m3=8_466_560, m4=14_080_480,
                       m5=22_708_860)


def _images(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def _converted_logits(src, dst, x: torch.Tensor) -> torch.Tensor:
    """Logits of our mmpretrain classifier on ``src`` converted by the release converter."""
    report = convert_official_checkpoint(src, dst)
    model = build_model(load_model_config(REPO / report.config), report.cfg_options).eval()
    load_state_dict_checked(model, read_checkpoint(dst)['state_dict'], str(dst))
    with torch.no_grad():
        return model(x, mode='tensor')


def _timm_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------
def test_the_archs_and_a_tag_for_every_imagenet_release_are_registered():
    single_branch = [f'repnext_{arch}e' for arch in SINGLE_BRANCH_ARCHS]  # M0E-M2E, no weights
    assert timm.list_models('repnext_*') == sorted([f'repnext_{arch}' for arch in ARCHS] +
                                                   single_branch)
    assert set(timm.list_pretrained('repnext_*')) == {
        f'repnext_{release.arch}.{release.tag}' for release in releases.IMAGENET}
    assert len(timm.list_pretrained('repnext_m0*')) == 3
    assert len(timm.list_pretrained('repnext_m5*')) == 1
    for arch in ARCHS:  # the paper's recipe is every arch's default
        assert timm.models.get_pretrained_cfg(f'repnext_{arch}').tag == 'dist_300e_in1k'


@pytest.mark.parametrize('release', releases.IMAGENET, ids=lambda r: f'{r.arch}.{r.tag}')
def test_each_tag_names_its_file_and_how_it_was_evaluated(release):
    model = timm.create_model(f'repnext_{release.arch}.{release.tag}', device='meta')
    cfg = model.pretrained_cfg
    assert cfg['url'] == ('https://github.com/suous/RepNeXt/releases/download/v1.0/'
                          + release.filename)
    assert cfg.get('hf_hub_id') is None
    assert cfg['num_classes'] == model.num_classes == 1000
    assert cfg['input_size'] == (3, 224, 224) and cfg['pool_size'] == (7, 7)
    assert cfg['crop_pct'] == (0.9 if release.recipe == 'starnet' else 0.875)
    assert cfg['interpolation'] == 'bicubic'
    assert cfg['mean'] == (0.485, 0.456, 0.406) and cfg['std'] == (0.229, 0.224, 0.225)
    state = model.state_dict()
    assert cfg['first_conv'] + '.weight' in state
    assert [c + '.weight' in state for c in cfg['classifier']] == [True, True]
    assert cfg['license'] == 'apache-2.0'
    assert cfg['paper_ids'] == 'arXiv:2406.16004'
    assert cfg['paper_name'].startswith('RepNeXt: A Fast Multi-Scale CNN')
    assert cfg['origin_url'] == 'https://github.com/suous/RepNeXt'
    assert model.default_cfg is model.pretrained_cfg


@pytest.mark.parametrize('arch', ARCHS)
def test_each_arch_is_the_packages_backbone_and_head_with_the_converters_names(arch):
    model = timm.create_model(f'repnext_{arch}', device='meta')
    assert type(model) is RepNeXtTimm
    assert type(model.backbone) is RepNeXt and type(model.head) is RepNeXtClsHead
    assert sum(p.numel() for p in model.parameters()) == TRAINING_PARAMS[arch]
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    converter = {key: tuple(value.shape)
                 for key, value in classifier_shapes(arch, 1000, 'cls').items()}
    assert ours == converter


def test_class_count_pooling_and_unknown_arguments():
    x = _images()
    with torch.no_grad():
        assert timm.create_model('repnext_m0', num_classes=10).eval()(x).shape == (2, 10)
        assert timm.create_model('repnext_m0', num_classes=0).eval()(x).shape == (2, 320)
        unpooled = timm.create_model('repnext_m0', num_classes=0, global_pool='').eval()
        assert unpooled(x).shape == (2, 320, 2, 2)
        dense = timm.create_model('repnext_m0', num_classes=10, global_pool='').eval()
        scores, features = dense(x), dense.forward_features(x)
    assert scores.shape == (2, 10, 2, 2)  # without pooling: the class scores at every position
    assert torch.allclose(scores[:, :, 1, 0], dense.head.logits(features[:, :, 1, 0]), atol=1e-6)
    with pytest.raises(ValueError, match="global_pool='median': expected one of"):
        timm.create_model('repnext_m0', global_pool='median')
    with pytest.raises(TypeError):
        timm.create_model('repnext_m0', not_a_model_argument=1)


# ---------------------------------------------------------------------------------------------
# Loading the releases
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('kind', ['imagenet', 'timm'])
def test_a_local_release_gives_the_logits_of_our_classifier_on_the_converted_file(
        releases, tmp_path, kind):
    src = releases[kind].path  # RepNeXt-M0 with 10 classes, in the authors' layout of ``kind``
    model = timm.create_model('repnext_m0', pretrained=True, num_classes=10,
                              pretrained_cfg_overlay=dict(file=str(src), num_classes=10))
    x = _images()
    expected = _converted_logits(src, tmp_path / 'converted.pth', x)
    assert max_rel_error(_timm_logits(model, x), expected) < 1e-5
    # the converted file is the timm model's checkpoint as it is
    converted = timm.create_model('repnext_m0', num_classes=10,
                                  checkpoint_path=str(tmp_path / 'converted.pth'))
    assert max_rel_error(_timm_logits(converted, x), expected) < 1e-6
    if kind == 'timm':  # this file also holds EMA weights: the raw ones are read, as evaluated
        checkpoint = read_checkpoint(src)
        stem = model.backbone.stem[0].conv.weight
        assert torch.equal(stem, checkpoint['state_dict']['stem.stem.0.conv.weight'])
        assert not torch.equal(stem, checkpoint['state_dict_ema']['stem.stem.0.conv.weight'])


def test_the_fused_torchscript_release_loads_into_a_fused_model(releases, tmp_path):
    src = releases['fused'].path
    # torch.load (timm's reader) refuses TorchScript under weights_only: custom_load has the
    # model read the file with the converter's reader
    overlay = dict(file=str(src), num_classes=10, custom_load=True)
    model = timm.create_model('repnext_m0', pretrained=True, num_classes=10, deploy=True,
                              pretrained_cfg_overlay=overlay)
    assert model.backbone.deploy and model.head.deploy
    x = _images()
    assert max_rel_error(_timm_logits(model, x),
                         _converted_logits(src, tmp_path / 'converted.pth', x)) < 1e-5
    with pytest.raises(InputError, match='loads only into a fused model: create it with '
                                         'deploy=True'):
        timm.create_model('repnext_m0', pretrained=True, num_classes=10,
                          pretrained_cfg_overlay=overlay)


@pytest.mark.parametrize('kind', ['imagenet', 'timm'])
def test_custom_load_reads_the_training_releases_alike(releases, kind):
    src = releases[kind].path
    timm_read = timm.create_model('repnext_m0', pretrained=True, num_classes=10,
                                  pretrained_cfg_overlay=dict(file=str(src), num_classes=10))
    ours = timm.create_model('repnext_m0', pretrained=True, num_classes=10,
                             pretrained_cfg_overlay=dict(file=str(src), custom_load=True))
    for (key, value), other in zip(timm_read.state_dict().items(), ours.state_dict().values()):
        assert torch.equal(value, other), key


def test_a_training_release_loads_fused_into_a_fused_model(releases, tmp_path):
    src = releases['imagenet'].path
    model = timm.create_model('repnext_m0', pretrained=True, num_classes=10, deploy=True,
                              pretrained_cfg_overlay=dict(file=str(src), num_classes=10))
    x = _images()
    assert max_rel_error(_timm_logits(model, x),
                         _converted_logits(src, tmp_path / 'converted.pth', x)) < 1e-5


def test_another_class_count_keeps_the_backbone_and_a_new_classifier(releases):
    src = releases['imagenet'].path  # 10 classes
    model = timm.create_model('repnext_m0', pretrained=True, num_classes=3,
                              pretrained_cfg_overlay=dict(file=str(src), num_classes=10))
    weights = read_checkpoint(src)['model']
    assert torch.equal(model.backbone.stem[0].conv.weight, weights['stem.stem.0.conv.weight'])
    assert model.head.head.linear.weight.shape == (3, 320)
    assert torch.equal(model.head.head.norm.running_var, weights['head.head.norm.running_var'])
    features = timm.create_model('repnext_m0', pretrained=True, num_classes=0, in_chans=1,
                                 pretrained_cfg_overlay=dict(file=str(src), num_classes=10))
    assert features.head is None
    assert torch.allclose(features.backbone.stem[0].conv.weight,
                          weights['stem.stem.0.conv.weight'].sum(1, keepdim=True))


def test_a_release_of_another_arch_is_refused(releases):
    with pytest.raises(InputError, match='the weights are RepNeXt-M0'):
        timm.create_model('repnext_m1', pretrained=True, num_classes=10,
                          pretrained_cfg_overlay=dict(file=str(releases['imagenet'].path)))


@pytest.fixture
def hub_checkpoints(tmp_path, monkeypatch):
    """An empty torch hub folder: ``pretrained=True`` finds a tag's file there by its name
    (as after a download) and reads it without going online."""
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    folder = tmp_path / 'hub' / 'checkpoints'
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize('name, make', [
    ('repnext_m0', lambda: author_checkpoint('m0', seed=7)),
    ('repnext_m0.starnet_dist_300e_in1k', lambda: timm_checkpoint('m0', seed=8, ema=True)),
], ids=['default tag', 'starnet_dist_300e_in1k'])
def test_pretrained_reads_the_tags_release_file(hub_checkpoints, tmp_path, name, make):
    url = timm.models.get_pretrained_cfg(name).url
    src = hub_checkpoints / url.rsplit('/', 1)[-1]
    torch.save(make(), src)
    model = timm.create_model(name, pretrained=True)
    x = _images()
    assert max_rel_error(_timm_logits(model, x),
                         _converted_logits(src, tmp_path / 'converted.pth', x)) < 1e-5
