"""repnext_mm/zoo/model_index.py: zoo names -> configs of the installed package, and the
classifiers as models of mmpretrain's hub (get_model, list_models, the Inferencer by name).

mmdet's and mmseg's Inferencers have no hook for a plugin's model index: they are checked here
with the config path the zoo resolves, their shortest supported form.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from repnext_mm.utils.errors import InputError
from repnext_mm.zoo import model_index
from tests.helpers import REPO, SHAPES_CONFIGS, requires_mmcv_ops

pytestmark = pytest.mark.usefixtures('one_cpu_thread')

SHAPES_IMAGE = dict(detector=REPO / 'data/shapes/coco/val/000000.png',
                    segmentor=REPO / 'data/shapes/ade/images/validation/000000.jpg')


def _index_entries() -> dict[str, dict]:
    entries = {}
    for relative in yaml.safe_load((REPO / 'model-index.yml').read_text())['Import']:
        for entry in yaml.safe_load((REPO / relative).read_text())['Models']:
            entries[entry['Name']] = entry
    return entries


def _copy_zoo(root: Path) -> Path:
    """model-index.yml and configs/ as a wheel holds them under repnext_mm/.mim."""
    root.mkdir(parents=True)
    shutil.copyfile(REPO / 'model-index.yml', root / 'model-index.yml')
    shutil.copytree(REPO / 'configs', root / 'configs',
                    ignore=shutil.ignore_patterns('__pycache__'))
    return root


@pytest.fixture
def empty_hub(monkeypatch):
    """mmpretrain's ModelHub with no model (its own registration marked done)."""
    from mmpretrain.apis import ModelHub

    monkeypatch.setattr(ModelHub, '_models_dict', {})
    monkeypatch.setattr(ModelHub, '_ModelHub__mmpretrain_registered', True)
    return ModelHub


# --------------------------------------------------------------------------------------------
# Names -> configs
# --------------------------------------------------------------------------------------------
def test_every_index_entry_is_a_zoo_model_with_its_config_and_weights():
    entries = _index_entries()
    models = model_index.zoo_models()
    assert sorted(models) == sorted(entries)
    for name, model in models.items():
        assert model.config.resolve() == (REPO / entries[name]['Config']).resolve()
        assert model.library == Path(entries[name]['Config']).parts[1]
        assert model.weights == entries[name].get('Weights')
    assert models['mask_rcnn_repnext_m4_fpn_1x_coco'].weights.endswith('/repnext_m4_coco.pth')


@pytest.mark.parametrize('name', ['mask_rcnn_repnext_m0_fpn_shapes',
                                  'fpn_repnext_m0_shapes.py', 'REPNEXT_M0_SHAPES'])
def test_config_path_finds_a_name_in_the_installed_package(name):
    path = model_index.config_path(name)
    assert path.is_file()
    stem = name.lower().removesuffix('.py')
    assert path.resolve() in {p.resolve() for p in SHAPES_CONFIGS.values()}
    assert path.stem == stem
    # The editable install's .mim (links to this checkout), as a wheel's copies would be.
    assert path.is_relative_to(model_index.package_dir() / '.mim')


def test_an_unknown_name_suggests_close_ones():
    with pytest.raises(InputError, match="'mask_rcnn_repnext_m0_fpn_shape' is not a model of the "
                       'repnext_mm zoo.*did you mean mask_rcnn_repnext_m0_fpn_shapes'):
        model_index.config_path('mask_rcnn_repnext_m0_fpn_shape')


def test_zoo_root_is_the_wheels_mim_else_the_checkout(tmp_path, monkeypatch):
    wheel_package = tmp_path / 'site-packages' / 'repnext_mm'
    _copy_zoo(wheel_package / '.mim')
    monkeypatch.setattr(model_index, 'package_dir', lambda: wheel_package)
    assert model_index.zoo_root() == wheel_package / '.mim'
    assert model_index.config_path('fpn_repnext_m0_shapes') == (
        wheel_package / '.mim/configs/mmseg/fpn_repnext_m0_shapes.py')

    checkout_package = tmp_path / 'checkout' / 'repnext_mm'
    checkout_package.mkdir(parents=True)
    _copy_zoo(tmp_path / 'checkout' / 'zoo')
    for name in ('model-index.yml', 'configs'):
        (tmp_path / 'checkout' / 'zoo' / name).rename(tmp_path / 'checkout' / name)
    monkeypatch.setattr(model_index, 'package_dir', lambda: checkout_package)
    assert model_index.zoo_root() == tmp_path / 'checkout'

    monkeypatch.setattr(model_index, 'package_dir', lambda: tmp_path / 'bare' / 'repnext_mm')
    with pytest.raises(InputError, match='installed without its model zoo'):
        model_index.zoo_root()


# --------------------------------------------------------------------------------------------
# mmpretrain's model hub
# --------------------------------------------------------------------------------------------
def _classifier_names() -> list[str]:
    return sorted(m.name for m in model_index.zoo_models().values() if m.library == 'mmpretrain')


def test_import_registers_the_classifiers_and_only_them():
    import mmpretrain

    import repnext_mm  # noqa: F401  (registers at import)

    listed = mmpretrain.list_models('*repnext*')
    assert listed == _classifier_names() and 'repnext_m0_shapes' in listed
    assert not [n for n in listed if n.startswith(('mask_rcnn', 'fpn_'))]
    # Classification models with a published result are what the Inferencer lists.
    assert 'repnext_m4_8xb256_in1k_distill' in \
        mmpretrain.ImageClassificationInferencer.list_models('repnext')


def test_registration_is_idempotent():
    from mmpretrain.apis import ModelHub

    before = dict(ModelHub._models_dict)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no "name taken" warning for our own names
        assert model_index.register_mmpretrain_models() == []
        assert model_index.register_mmpretrain_models(REPO) == []  # the checkout's own files
    assert ModelHub._models_dict == before


def test_registration_from_a_wheel_joins_configs_to_its_mim(empty_hub, tmp_path):
    mim = _copy_zoo(tmp_path / 'repnext_mm' / '.mim')
    assert model_index.register_mmpretrain_models(mim) == _classifier_names()
    metainfo = empty_hub.get('repnext_m4_8xb256_in1k_distill')
    assert Path(metainfo.config.filename) == (
        mim / 'configs/mmpretrain/repnext_m4_8xb256_in1k_distill.py')
    assert metainfo.weights == ('https://github.com/suous/RepNeXt/releases/download/v1.0/'
                                'repnext_m4_distill_300e.pth')
    assert model_index.register_mmpretrain_models(mim) == []


def test_names_taken_by_another_package_are_left_alone(empty_hub):
    empty_hub._models_dict['repnext_m0_shapes'] = type('Other', (), {'config': '/elsewhere.py'})()
    with pytest.warns(UserWarning, match='names repnext_m0_shapes are taken'):
        assert model_index.register_mmpretrain_models() == []
    assert list(empty_hub._models_dict) == ['repnext_m0_shapes']


def test_without_mmpretrain_nothing_is_registered(monkeypatch):
    monkeypatch.setitem(__import__('sys').modules, 'mmpretrain.apis', None)  # import fails
    assert model_index.register_mmpretrain_models() == []


def test_get_model_and_the_inferencer_by_name(trained_checkpoints, shapes_data):
    import mmpretrain
    from mmengine.registry import DefaultScope
    from mmpretrain import ImageClassificationInferencer

    from repnext_mm.apis.checkpoint import read_checkpoint

    checkpoint = trained_checkpoints['classifier']
    random = mmpretrain.get_model('repnext_m0_shapes', pretrained=False)
    assert type(random).__name__ == 'ImageClassifier' and random.head.num_classes == 4
    model = mmpretrain.get_model('repnext_m0_shapes', pretrained=str(checkpoint))
    expected = read_checkpoint(checkpoint)['state_dict']
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())

    # mmpretrain's inferencer builds its pipeline in the current default scope, which a session
    # fixture run earlier in this process (another library's tool) may have set.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        inferencer = ImageClassificationInferencer('repnext_m0_shapes',
                                                   pretrained=str(checkpoint), device='cpu')
        image = next((shapes_data / 'imagenet/val/star').iterdir())
        result, = inferencer(str(image))
    assert result['pred_class'] in ('circle', 'square', 'star', 'triangle')
    assert result['pred_scores'].shape == (4,)


# --------------------------------------------------------------------------------------------
# mmdet and mmseg: no hook for a plugin's index; the zoo's config path is the supported form
# --------------------------------------------------------------------------------------------
@requires_mmcv_ops
@pytest.mark.slow
@pytest.mark.parametrize('task', ['detector', 'segmentor'])
def test_library_inferencers_take_the_zoo_config_path(task, trained_checkpoints, shapes_data,
                                                      tmp_path):
    if task == 'detector':
        from mmdet.apis import DetInferencer as Inferencer
        name = 'mask_rcnn_repnext_m0_fpn_shapes'
    else:
        from mmseg.apis import MMSegInferencer as Inferencer
        name = 'fpn_repnext_m0_shapes'
    weights = str(trained_checkpoints[task])
    if task == 'segmentor':  # as mmseg's runner saves it: the classes with their colours
        checkpoint = torch.load(weights, weights_only=True)
        checkpoint['meta']['dataset_meta']['palette'] = [[220, 20, 60], [0, 130, 200],
                                                         [60, 180, 75], [255, 225, 25]]
        torch.save(checkpoint, weights := str(tmp_path / 'segmentor.pth'))
    with pytest.raises(ValueError, match=f'Cannot find model: {name}'):
        Inferencer(model=name, weights=weights, device='cpu')  # looks in its own package only
    inferencer = Inferencer(model=str(model_index.config_path(name)), weights=weights,
                            device='cpu')
    inferencer(str(SHAPES_IMAGE[task]), out_dir=str(tmp_path / 'out'))
    picture = tmp_path / 'out' / 'vis' / SHAPES_IMAGE[task].name
    assert picture.is_file() and picture.stat().st_size > 0
