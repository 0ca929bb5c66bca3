"""Reading configs: every mistake is one InputError that names the fix."""
from __future__ import annotations

import os

import pytest
from mmengine.config import Config

from repnext_mm.apis.config import check_model_arguments, load_config, set_work_dir
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.utils.errors import InputError
from tests.helpers import REPO, first_quick_rest_slow

DET_CONFIG = str(REPO / 'configs' / 'mmdet' / 'mask_rcnn_repnext_m0_fpn_shapes.py')


def test_config_scope_must_be_supported(tmp_path):
    path = tmp_path / 'other.py'
    path.write_text("default_scope = 'mmocr'\n")
    with pytest.raises(InputError, match=r"default_scope='mmocr'.*\('mmdet', 'mmseg', "
                                        r"'mmpretrain'\)"):
        load_config(str(path))


def test_work_dir_priority():
    cfg = Config(dict())
    set_work_dir(cfg, 'configs/mmdet/some_config.py', None)
    assert cfg.work_dir == os.path.join('./work_dirs', 'some_config')
    set_work_dir(cfg, 'configs/mmdet/some_config.py', 'explicit')
    assert cfg.work_dir == 'explicit'


@pytest.mark.parametrize('text, expected', [
    ("model = dict(\n", 'syntax error'),
    ("x = 1\n  y = 2\n", 'line 2'),
])
def test_syntax_errors_name_the_file_and_line(tmp_path, text, expected):
    path = tmp_path / 'broken.py'
    path.write_text(text)
    with pytest.raises(InputError, match=f'config {path}, line') as error:
        load_config(str(path))
    assert expected in str(error.value) and '\n' not in str(error.value)


def test_a_directory_is_not_a_config(tmp_path):
    with pytest.raises(InputError, match='is a directory; pass a .py config file'):
        load_config(str(tmp_path))


def test_an_unknown_argument_suggests_the_closest():
    with pytest.raises(InputError, match=r"^model\.backbone: RepNeXt has no argument 'archh'; "
                                         r"did you mean 'arch'\?$"):
        load_config(DET_CONFIG, {'model.backbone.archh': 'm0'})


def test_an_unknown_argument_of_a_library_module_is_caught_too():
    with pytest.raises(InputError, match=r"model\.neck: FPN has no argument 'out_channel'; "
                                         r"did you mean 'out_channels'\?"):
        load_config(DET_CONFIG, {'model.neck.out_channel': 128})


@pytest.mark.parametrize('config', first_quick_rest_slow(sorted(
    str(p) for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)))
def test_every_shipped_config_passes_the_argument_check(config):
    check_model_arguments(Config.fromfile(config))


def test_the_documented_custom_arch_form_starts_from_the_named_arch():
    cfg = load_config(DET_CONFIG, {'model.backbone.arch.depths': [1, 1, 3, 1]})
    widths = list(RepNeXt.arch_settings['m0']['widths'])
    assert cfg.model.backbone.arch == dict(widths=widths, depths=[1, 1, 3, 1])


def test_a_bad_custom_arch_is_refused_before_building():
    with pytest.raises(InputError, match=r'^model\.backbone\.arch: '):
        load_config(DET_CONFIG, {'model.backbone.arch.widths': [8, 16, 32]})


def test_an_option_that_does_not_apply_names_itself():
    with pytest.raises(InputError, match=r"--cfg-options model\.backbone\.norm_cfg\.type\.x=1 "
                                         r"does not apply to"):
        load_config(DET_CONFIG, {'model.backbone.norm_cfg.type.x': 1})


# ------------------------------------------------------------------ backbone outputs vs the neck
CLS_CONFIG = str(REPO / 'configs' / 'mmpretrain' / 'repnext_m0_shapes.py')
SEG_CONFIG = str(REPO / 'configs' / 'mmseg' / 'fpn_repnext_m0_shapes.py')


@pytest.mark.parametrize('config, options, message', [
    (DET_CONFIG, {'model.backbone.out_indices': (0, 1, 2)},
     r"^model\.backbone\.out_indices=\(0, 1, 2\) \(arch 'm0'\) gives 3 feature maps with channels "
     r'\[40, 80, 160\], but model\.neck\.in_channels=\[40, 80, 160, 320\] expects 4; make them '
     r'agree, e.g. model\.neck\.in_channels=\[40, 80, 160\]$'),
    (SEG_CONFIG, {'model.backbone.arch': 'm1'},
     r"out_indices=\(0, 1, 2, 3\) \(arch 'm1'\) gives 4 feature maps with channels "
     r'\[48, 96, 192, 384\], but model\.neck\.in_channels=\[40, 80, 160, 320\] expects those '
     r'channels'),
    (CLS_CONFIG, {'model.backbone.out_indices': (2, )},
     r'out_indices=\(2,\) .* channels \[160\], the last pooled for the head, but '
     r'model\.head\.in_channels=320; make them agree, e\.g\. model\.head\.in_channels=160$'),
], ids=['detector-3-of-4-levels', 'segmentor-other-arch', 'classifier-head'])
def test_backbone_outputs_that_do_not_fit_the_neck_name_both_keys(config, options, message):
    with pytest.raises(InputError, match=message):
        load_config(config, options)


@pytest.mark.parametrize('config, options', [
    (DET_CONFIG, {'model.backbone.out_indices': (1, 2, 3),
                  'model.neck.in_channels': [80, 160, 320]}),
    (DET_CONFIG, {'model.backbone.out_indices': (0, 1, 2, 7)}),  # RepNeXt itself refuses it
    (CLS_CONFIG, {'model.backbone.out_indices': (1, -1)}),
])
def test_outputs_that_fit_or_that_the_backbone_refuses_pass_the_reader(config, options):
    load_config(config, options)
