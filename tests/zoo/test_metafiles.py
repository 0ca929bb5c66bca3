"""repnext_mm/zoo/metafiles.py: reading configs, the paper's results per entry, the YAML files.

The generated zoo files of this repository are checked in tests/tools/misc/test_metafiles.py.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from repnext_mm import paper
from repnext_mm.zoo import metafiles


def config_info(library: str, arch: str, **changes) -> metafiles.ConfigInfo:
    """A ConfigInfo as read_config returns it, without reading a config."""
    classifier = library == 'mmpretrain'
    info = metafiles.ConfigInfo(
        path=Path(f'configs/{library}/x.py'), relative=f'configs/{library}/x.py', library=library,
        name='x', arch=arch, kind='classifier' if classifier else 'backbone', distill=False,
        shapes=False, alias_of=None, model_cfg={}, input_size=(224, 224) if classifier else (512, 512),
        epochs=12, iterations=None)
    return dataclasses.replace(info, **changes)


FIGURES = dict(params=2_000_000, fused_params=1_900_000, macs=400_000_000)


def test_alias_target_is_the_base_of_a_one_line_config(tmp_path):
    alias = tmp_path / 'alias.py'
    alias.write_text("# comment\n_base_ = './mask_rcnn_repnext_m4_fpn_1x_coco.py'\n")
    assert metafiles.alias_target(alias) == 'mask_rcnn_repnext_m4_fpn_1x_coco'
    full = tmp_path / 'full.py'
    full.write_text("_base_ = './x.py'\nmodel = dict(backbone=dict(arch='m3'))\n")
    assert metafiles.alias_target(full) is None


def test_stale_files_compares_with_the_files_under_root(tmp_path):
    assert metafiles.stale_files({'a.yml': 'x: 1\n'}, tmp_path) == ['a.yml']
    metafiles.write_outputs({'a.yml': 'x: 1\n'}, tmp_path)
    assert metafiles.stale_files({'a.yml': 'x: 1\n'}, tmp_path) == []
    assert metafiles.stale_files({'a.yml': 'x: 2\n'}, tmp_path) == ['a.yml']


def test_config_files_and_libraries(tmp_path):
    for relative in ('mmdet/a.py', 'mmdet/_base_/b.py', 'mmseg/sub/c.py', 'mmseg/_d.py'):
        (tmp_path / 'configs' / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / 'configs' / relative).write_text('')
    files = metafiles.config_files(tmp_path)
    assert [p.relative_to(tmp_path / 'configs').as_posix() for p in files] == [
        'mmdet/a.py', 'mmseg/sub/c.py']
    assert [metafiles.library_of(p, tmp_path) for p in files] == ['mmdet', 'mmseg']
    (tmp_path / 'configs' / 'mmfoo').mkdir()
    (tmp_path / 'configs' / 'mmfoo' / 'x.py').write_text('')
    with pytest.raises(metafiles.MetafileError, match='configs/mmfoo/ is not one of'):
        metafiles.library_of(tmp_path / 'configs' / 'mmfoo' / 'x.py', tmp_path)


def test_no_config_is_an_error(tmp_path):
    (tmp_path / 'configs').mkdir()
    with pytest.raises(metafiles.MetafileError, match='no config found'):
        metafiles.generate(tmp_path, show_progress=False)


@pytest.mark.parametrize('arch', sorted(paper.REPNEXT_CLASSIFIERS))
def test_classifier_entries_carry_the_papers_table_2_and_3(arch):
    published = paper.REPNEXT_CLASSIFIERS[arch]
    distilled = metafiles.model_entry(config_info('mmpretrain', arch, distill=True), FIGURES)
    plain = metafiles.model_entry(config_info('mmpretrain', arch), FIGURES)
    assert distilled['Results'][0]['Metrics'] == {'Top 1 Accuracy': published.top1}
    assert plain['Results'][0]['Metrics'] == {'Top 1 Accuracy': published.top1_plain}
    for entry in (distilled, plain):
        assert entry['Metadata']['Latency iPhone 12 (ms, paper)'] == published.iphone12_ms
    # Only the distilled classifiers were released.
    assert distilled['Weights'].endswith(f'repnext_{arch}_distill_300e.pth') and 'Weights' not in plain


@pytest.mark.parametrize('arch', sorted(paper.REPNEXT_DENSE))
def test_dense_entries_carry_the_papers_table_4(arch):
    published = paper.REPNEXT_DENSE[arch]
    detector = metafiles.model_entry(config_info('mmdet', arch), FIGURES)
    segmentor = metafiles.model_entry(config_info('mmseg', arch), FIGURES)
    assert [r['Metrics'] for r in detector['Results']] == [{'box AP': published.box_ap},
                                                           {'mask AP': published.mask_ap}]
    assert segmentor['Results'] == [dict(Task='Semantic Segmentation', Dataset='ADE20K',
                                         Metrics={'mIoU': published.miou})]
    for entry, weights in ((detector, f'repnext_{arch}_coco.pth'),
                           (segmentor, f'repnext_{arch}_ade20k.pth')):
        assert entry['Metadata']['Latency iPhone 12 (ms, paper)'] == published.iphone12_ms
        assert entry['Weights'].endswith(weights)


@pytest.mark.parametrize('library', metafiles.LIBRARIES)
def test_unpublished_and_demo_configs_have_no_results_or_latency(library):
    assert 'm0' not in {*paper.REPNEXT_CLASSIFIERS, *paper.REPNEXT_DENSE}  # no M0 in the paper
    unpublished = metafiles.model_entry(config_info(library, 'm0', distill=True), FIGURES)
    demo = metafiles.model_entry(config_info(library, 'm3', shapes=True, distill=True), FIGURES)
    for entry in (unpublished, demo):
        assert entry['Results'] is None
        assert 'Latency iPhone 12 (ms, paper)' not in entry['Metadata']
    # The authors released every distilled classifier (M0 too), detectors and segmentors of M3-M5.
    assert ('Weights' in unpublished) == (library == 'mmpretrain')
    assert 'Weights' not in demo and demo['Metadata']['Demo']


def test_render_imports_every_library_with_entries():
    entries = {'mmpretrain': [metafiles.model_entry(config_info('mmpretrain', 'm1'), FIGURES)],
               'mmdet': [], 'mmseg': [metafiles.model_entry(config_info('mmseg', 'm0'), FIGURES)]}
    outputs = metafiles.render(entries)
    assert list(outputs) == ['configs/mmpretrain/metafile.yml', 'configs/mmseg/metafile.yml',
                             metafiles.MODEL_INDEX]
    assert all(text.startswith(metafiles.HEADER) for text in outputs.values())
    assert yaml.safe_load(outputs[metafiles.MODEL_INDEX]) == {
        'Import': ['configs/mmpretrain/metafile.yml', 'configs/mmseg/metafile.yml']}
    document = yaml.safe_load(outputs['configs/mmseg/metafile.yml'])
    assert document['Collections'][0]['Paper'] == {'URL': paper.PAPER_URL, 'Title': paper.PAPER_TITLE}
    assert document['Models'][0]['Metadata']['FLOPs'] == FIGURES['macs']


@pytest.mark.parametrize('arch', ['m0', 'm3', 'm5'])
def test_weights_are_the_authors_release_files(arch):
    from repnext_mm import releases

    def weights(library, **changes):
        return metafiles.model_entry(config_info(library, arch, **changes), FIGURES).get('Weights')

    distilled = releases.DISTILL_300E.format(arch=arch)
    assert weights('mmpretrain', distill=True) == releases.release_url(distilled)
    assert releases.imagenet_release(distilled).distilled
    assert weights('mmpretrain') is None  # the plain recipe was not released
    dense = arch in releases.DOWNSTREAM_ARCHS
    assert weights('mmdet') == (releases.release_url(f'repnext_{arch}_coco.pth') if dense else None)
    assert weights('mmseg') == (releases.release_url(f'repnext_{arch}_ade20k.pth') if dense else None)
